#!/usr/bin/env bash
# Run the GPU tier end to end and write results/<environment-id>/ (conformance.* and perf.*).
#
# Usage, from the repository root, with no install step:
#     bash conformance/gpu_check.sh
# PYTHON selects the interpreter (default python3). It needs numpy, ml_dtypes and
# rich, plus the frameworks it finds (torch, and jax with jaxlib and optax).
# TensorFlow and matplotlib are optional. A missing framework is reported as not
# installed, and the others run.
#
# Time bound: the whole script should take under 8 minutes on one H200 with 16
# cores. NOTE: the selection's run time is an estimate from the 2-core CPU run's
# times per loss, not a measurement, because no GPU run has been made yet. The
# budget is enforced: each step runs under `timeout` with its share of
# BUDGET_SECONDS (450 s, which leaves 30 s for a step to stop (20 s at most) after its timeout
# and for the results index). The variables below override each choice:
# - conformance (at most CONFORMANCE_SECONDS, 300 s): four losses (the
#   cross-entropy family, where GPU kernels and TF32 matter, and two pairwise
#   losses), float32, bfloat16 and float16, every case group including the
#   GPU-only float16 cases. Every unit is evaluated three times (on the GPU,
#   again on the GPU for determinism, and on the CPU). JAX compiles each
#   operation for the GPU on first use, which dominated the CPU run (about 200 s
#   for these losses), so the other losses are left out. A run cut short by its
#   timeout writes nothing, so the selection is sized to finish well inside it.
# - compiled mode: only linear_cross_entropy in float32 and cross_entropy in
#   bfloat16, because torch.compile takes seconds per graph on a GPU and the
#   full compiled set would take longer than the whole budget.
# - the TF32 tier (--allow-tf32) is not run.
# - bench (the rest of the budget): the gpu-check preset (five cases). With less
#   than BENCH_MIN_SECONDS left it runs eager mode only, and with less than
#   BENCH_SKIP_SECONDS left it is skipped.
# Ctrl-C or SIGTERM stops the script at once with status 130 or 143.
set -u

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
BUDGET_SECONDS=${BUDGET_SECONDS:-450}
CONFORMANCE_SECONDS=${CONFORMANCE_SECONDS:-300}
BENCH_MIN_SECONDS=${BENCH_MIN_SECONDS:-120}
BENCH_SKIP_SECONDS=${BENCH_SKIP_SECONDS:-30}
LOSSES=${GPU_CHECK_LOSSES:-cross_entropy,linear_cross_entropy,bradley_terry_loss,dpo_loss}
DTYPES=${GPU_CHECK_DTYPES:-float32,bfloat16,float16}
COMPILED=${GPU_CHECK_COMPILED:-linear_cross_entropy:float32,cross_entropy:bfloat16}
started=$(date +%s)

# The CLI stops its workers on Ctrl-C and exits 130. Bash would take that for an
# ordinary failure and go on to the next step, so the traps end the script.
trap 'echo "gpu_check: interrupted; the remaining steps were not run" >&2; exit 130' INT
trap 'echo "gpu_check: terminated; the remaining steps were not run" >&2; exit 143' TERM

elapsed() { echo $(($(date +%s) - started)); }

# Run a command with a time limit in seconds. --foreground keeps it in the
# terminal's process group, so Ctrl-C reaches it. On expiry it gets SIGTERM,
# which the CLI handles like Ctrl-C, and the status is 124.
limited() {
    local seconds=$1
    shift
    if command -v timeout > /dev/null; then
        timeout --foreground --kill-after=20 "$seconds" "$@"
    else
        echo "gpu_check: timeout (GNU coreutils) not found, so this step runs without its $seconds s limit" >&2
        "$@"
    fi
}

environment_id=$("$PYTHON" -c 'from conformance.environment import environment_id; print(environment_id("gpu"))') || {
    echo "gpu_check: $PYTHON cannot import the harness; run this script from a checkout with numpy, ml_dtypes and rich installed" >&2
    exit 2
}
# GPU_CHECK_OUT replaces the results folder (the harness's tests write to a temporary one).
out=${GPU_CHECK_OUT:-results/$environment_id}
mkdir -p "$out"
echo "gpu_check: writing $out" >&2
"$PYTHON" -m conformance list > "$out/frameworks.txt" 2>&1 || true

# run rejects a --compiled-loss entry that --loss or --dtype does not select, so
# entries outside GPU_CHECK_LOSSES and GPU_CHECK_DTYPES are dropped here.
compiled=""
for entry in ${COMPILED//,/ }; do
    loss=${entry%%:*}
    dtype=${entry#"$loss"}
    dtype=${dtype#:}
    if [[ ",$LOSSES," == *",$loss,"* && ( -z "$dtype" || ",$DTYPES," == *",$dtype,"* ) ]]; then
        compiled=${compiled:+$compiled,}$entry
    fi
done
if [ -n "$compiled" ]; then
    mode_options=(--mode eager,compiled --compiled-loss "$compiled")
else
    mode_options=(--mode eager)
fi

echo "gpu_check: conformance on the GPU ($LOSSES; $DTYPES; compiled: ${compiled:-none}; at most $CONFORMANCE_SECONDS s)" >&2
limited "$CONFORMANCE_SECONDS" "$PYTHON" -m conformance run --device gpu --backend all --loss "$LOSSES" --dtype "$DTYPES" \
    "${mode_options[@]}" --timeout 300 --no-progress --out "$out"
conformance_status=$?
if [ "$conformance_status" -eq 124 ]; then
    echo "gpu_check: conformance timed out after $CONFORMANCE_SECONDS s and wrote nothing; select fewer losses with GPU_CHECK_LOSSES or raise CONFORMANCE_SECONDS" >&2
elif [ "$conformance_status" -ge 128 ]; then
    echo "gpu_check: conformance was stopped by a signal (status $conformance_status); the remaining steps were not run" >&2
    exit "$conformance_status"
fi
echo "gpu_check: conformance finished with status $conformance_status after $(elapsed) s" >&2

remaining=$((BUDGET_SECONDS - $(elapsed)))
bench_status=0
if [ "$remaining" -lt "$BENCH_SKIP_SECONDS" ]; then
    echo "gpu_check: bench skipped, because $remaining s of the $BUDGET_SECONDS s budget remain" >&2
else
    bench_modes=eager,compiled
    if [ "$remaining" -lt "$BENCH_MIN_SECONDS" ]; then
        bench_modes=eager
        echo "gpu_check: $remaining s of the $BUDGET_SECONDS s budget remain, so the bench runs eager mode only" >&2
    fi
    limited "$remaining" "$PYTHON" -m conformance bench --device gpu --preset gpu-check --mode "$bench_modes" --timeout 300 --no-progress --out "$out"
    bench_status=$?
    if [ "$bench_status" -eq 124 ]; then
        echo "gpu_check: bench timed out after $remaining s, the rest of the budget" >&2
    elif [ "$bench_status" -ge 128 ]; then
        echo "gpu_check: bench was stopped by a signal (status $bench_status); the results index was not rewritten" >&2
        exit "$bench_status"
    fi
    echo "gpu_check: bench finished with status $bench_status after $(elapsed) s" >&2
fi

# The index lists every results folder, this one included.
"$PYTHON" -c 'import sys; from pathlib import Path; from conformance.report import write_index; write_index(Path(sys.argv[1]))' "$(dirname "$out")"

echo "gpu_check: done in $(elapsed) s; conformance status $conformance_status, bench status $bench_status; results in $out" >&2
if [ "$conformance_status" -ne 0 ]; then
    exit "$conformance_status"
fi
exit "$bench_status"
