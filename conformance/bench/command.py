"""``lossparity bench``: time every implementation, one backend process at a time, and write perf.json, perf.md and plots."""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

from .. import backend_loader
from ..environment import PROJECT_ROOT, describe
from ..report import write_index
from ..runner import BackendRun, run_backends
from . import report
from .measure import copy_bandwidth, exp_throughput
from .presets import PRESETS

MODES = ("eager", "compiled")
# The numpy backend is the float64 reference, not a contender, so it is not timed.
BENCH_BACKENDS = ("torch", "jax", "tensorflow")
EXIT_OK, EXIT_FAILURES, EXIT_INTERRUPTED = 0, 1, 130


def _worker_command(preset: str, losses: tuple[str, ...], modes: tuple[str, ...], device: str, seed: int):
    def command(run: BackendRun) -> list[str]:
        return [
            sys.executable,
            "-m",
            "conformance.bench.worker",
            "--backend",
            run.backend,
            "--device",
            device,
            "--preset",
            preset,
            "--losses",
            ",".join(losses),
            "--modes",
            ",".join(modes),
            "--seed",
            str(seed),
            "--skip",
            str(run.skip),
            "--out",
            str(run.output_path),
        ]

    return command


def _resolve(args, usage_error, split, choose):
    """Check the command line and return (backends, losses, modes, preset, filtered)."""
    if args.preset is None:
        args.preset = args.device
    preset = PRESETS.get(args.preset)
    if preset is None:
        raise usage_error(f"unknown --preset {args.preset!r}; expected one of: {', '.join(PRESETS)}")
    known = tuple(name for name in backend_loader.known_backends() if name != "numpy")
    requested_backends = split(args.backend)
    if "numpy" in requested_backends:
        raise usage_error("--backend numpy is the float64 reference spec and is not benchmarked; expected torch, jax, tensorflow or all")
    backends = choose("backend", requested_backends, known, BENCH_BACKENDS)
    preset_losses = tuple(dict.fromkeys(case.loss for case in preset.cases))
    outside = [name for name in split(args.loss) if name not in preset_losses and name != "all"]
    if outside:
        raise usage_error(
            f"--loss {', '.join(map(repr, outside))} is not timed by the {preset.name} preset; "
            f"expected one of: {', '.join(preset_losses)} or all"
        )
    losses = choose("loss", split(args.loss), preset_losses, preset_losses)
    modes = choose("mode", split(args.mode), MODES, MODES)
    if not 0 < args.timeout < float("inf"):
        raise usage_error(f"--timeout {args.timeout} is invalid; expected a positive, finite number of seconds")
    if args.seed < 0:
        raise usage_error(f"--seed {args.seed} is invalid; expected a non-negative integer")
    filtered = set(losses) != set(preset_losses) or set(modes) != set(MODES) or set(backends) != set(BENCH_BACKENDS)
    return list(backends), losses, modes, preset, filtered


def command_bench(args, *, usage_error, split, choose, require_writable_folder, progress_class) -> int:
    backends, losses, modes, preset, filtered = _resolve(args, usage_error, split, choose)
    environment = describe(args.device)
    publish = args.out is None and not filtered and preset.name == args.device
    if args.out:
        out_dir = Path(args.out)
        require_writable_folder(out_dir)
    elif publish:
        out_dir = PROJECT_ROOT / "results" / environment["environment_id"]
    else:
        out_dir = None
        print(
            "lossparity: a filtered run or a preset other than the device's does not replace the published tables; "
            "nothing is written (pass --out DIR to keep the results)",
            file=sys.stderr,
        )
    missing = {name: hint for name in backends if (hint := backend_loader.missing_framework(name))}
    if missing and (args.backend and "all" not in split(args.backend)):
        name, hint = next(iter(missing.items()))
        raise usage_error(f"backend {name!r} cannot run: {hint}")

    command = "lossparity " + " ".join(shlex.quote(part) for part in sys.argv[1:])
    started = time.monotonic()
    try:
        print("lossparity: measuring memory bandwidth and exp throughput", file=sys.stderr, flush=True)
        machine = {"load_average_before": os.getloadavg(), "bandwidth": copy_bandwidth(), "exp": exp_throughput()}
        show_progress = args.progress if args.progress is not None else sys.stderr.isatty()
        # An empty torch.compile cache for this run, so the first calls include the whole compilation.
        with tempfile.TemporaryDirectory(prefix="lossparity-inductor-") as cache, progress_class(backends, show_progress) as progress:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
            result = run_backends(
                backends,
                None,
                device=args.device,
                timeout=args.timeout,
                jobs=1,  # One backend at a time, so no two timings share the cores.
                on_progress=progress.update,
                worker_command=_worker_command(preset.name, losses, modes, args.device, args.seed),
            )
        machine["load_average_after"] = os.getloadavg()
    except KeyboardInterrupt:
        print("lossparity: interrupted; the workers were stopped and no results were written", file=sys.stderr)
        return EXIT_INTERRUPTED

    document = {
        "schema": 1,
        "environment": environment,
        "run": {
            "command": command,
            "preset": preset.name,
            "preset_description": preset.description,
            "repeats": vars(preset.repeats),
            "case_notes": {
                case.name: case.note
                for case in preset.cases
                if case.note and case.loss in losses
            },
            "losses": list(losses),
            "modes": list(modes),
            "seed": args.seed,
            "wall_seconds": round(time.monotonic() - started, 2),
        },
        "machine": machine,
        "backends": {
            name: {
                "versions": run.versions,
                "unavailable": run.unavailable,
                "memory_method": run.environment.get("memory_method"),
                "memory_counts_inputs": run.environment.get("memory_counts_inputs"),
                "seconds": round(run.seconds, 2),
                "compile_seconds": round(run.compile_seconds, 2),
                "restarts": run.restarts,
            }
            for name, run in result.backends.items()
        },
        "records": result.records,
    }
    device_bandwidths = [run.environment.get("device_bandwidth") for run in result.backends.values()]
    device_bandwidths = [bandwidth for bandwidth in device_bandwidths if bandwidth]
    if args.device == "gpu":
        # On a GPU the logits live in device memory, so efficiency is against the
        # device's copy bandwidth, and without it no efficiency is given.
        machine["host_bandwidth"] = machine["bandwidth"]
        machine["bandwidth"] = max(device_bandwidths, key=lambda bandwidth: bandwidth["best_gb_per_s"], default=None)
    report.annotate(document)
    problems = [record for record in result.records if record["status"] in report.PROBLEMS]
    measured = [record for record in result.records if record["status"] == "ok"]
    if publish and (problems or not measured or any(run.unavailable for run in result.backends.values())):
        print(
            "lossparity: the published tables are not replaced, because this run has errors, crashes, timeouts "
            "or backends that did not run (pass --out DIR to keep it)",
            file=sys.stderr,
        )
        out_dir = None
    if out_dir is not None:
        paths = report.write(document, out_dir)
        if publish:
            report.update_readme_link(PROJECT_ROOT / "README.md", document, paths["markdown"])
            write_index(out_dir.parent)
        print(f"lossparity: wrote {', '.join(str(path) for path in paths.values())}", file=sys.stderr)
    report.print_summary(document)

    if not result.records:
        print("lossparity: no backend produced a measurement; see the reasons above", file=sys.stderr)
        return EXIT_FAILURES
    return EXIT_FAILURES if problems else EXIT_OK
