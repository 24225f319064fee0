"""Tests of the GPU tier that run on a CPU: device selection, TF32 settings, determinism and device comparison.

Every test runs the real frameworks. The determinism and device-comparison
checks run on the CPU here through options the GPU tier turns on by itself:
--determinism, and the hidden --compare-device (cpu against cpu must give zero
difference). tests/unstable_backend supplies a mirror that changes between calls
and a perturbed second device, which the checks must catch.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conformance import backend_loader, cli, report
from conformance.compare import Tolerance
from conformance.environment import environment_id
from conformance.runner import run_backends
from conformance.tolerances import GRADIENT, OVERRIDES, TF32_LOSSES, VALUE, device_tolerance, tolerance_for
from conformance.worker import Selection, Worker, bitwise_differences

ROOT = Path(__file__).resolve().parent.parent
UNSTABLE = "unstable=tests.unstable_backend"
INSTALLED = [name for name in ("torch", "jax", "tensorflow") if importlib.util.find_spec(name) is not None]


def _cuda_visible() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


needs_cpu_only_machine = pytest.mark.skipif(_cuda_visible(), reason="this machine has a GPU, so no backend reports a missing one")


def _lossparity(*arguments: str, extra_backends: str = "", pythonpath: str = "") -> tuple[int, dict | None, str]:
    """Run the CLI with --format json; return the exit status, the JSON document (None if none) and stderr."""
    env = dict(os.environ)
    env.pop(backend_loader.EXTRA_BACKENDS_VARIABLE, None)
    if extra_backends:
        env[backend_loader.EXTRA_BACKENDS_VARIABLE] = extra_backends
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, str(ROOT)]))
    completed = subprocess.run(
        [sys.executable, "-m", "conformance", "run", "--format", "json", "--no-progress", *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    document = json.loads(completed.stdout) if completed.stdout.strip() else None
    return completed.returncode, document, completed.stderr


# Device selection ----------------------------------------------------------


@needs_cpu_only_machine
def test_no_gpu_messages():
    status, document, _ = _lossparity("--device", "gpu", "--backend", "all", "--loss", "mse", "--dtype", "float32", "--mode", "eager")
    assert status == 1  # No backend produced a result.
    assert document["records"] == []
    backends = document["run"]["backends"]
    expected = {
        "torch": ("PyTorch", "torch.cuda.is_available() is False", "lossparity[gpu]"),
        "jax": ("JAX", "sees no gpu device", "platforms it sees: cpu", "lossparity[gpu]"),
        "tensorflow": ("TensorFlow", "list_physical_devices('GPU') is empty", "lossparity[gpu]"),
    }
    for framework in INSTALLED:
        for words in expected[framework]:
            assert words in backends[framework]["unavailable"], framework
    assert "CPU only" in backends["numpy"]["unavailable"]


def test_gpu_group_rejected_on_cpu():
    status, document, stderr = _lossparity("--device", "cpu", "--group", "gpu", "--loss", "cross_entropy")
    assert status == 2
    assert document is None
    assert "only with --device gpu" in stderr


@pytest.mark.skipif("torch" not in INSTALLED, reason="needs PyTorch")
def test_gpu_cases_planned_only_on_gpu():
    selection = Selection(losses=("cross_entropy",), dtypes=("float32", "float16"), modes=("eager",), groups=("gpu",))
    on_gpu = Worker.load("torch", selection, "gpu").plan()
    on_cpu = Worker.load("torch", selection, "cpu").plan()
    names = {unit.case.name for unit in on_gpu}
    assert on_cpu == []
    assert {"gpu-spatial-16x1025x4096", "gpu-vocab-65536-equal-logits", "gpu-vocab-131072", "gpu-vocab-262144-sum"} <= names
    assert {unit.dtype for unit in on_gpu} == {"float16"}


def test_gpu_spatial_case_size():
    from conformance.cases.gpu import CASES, IGNORE

    case = next(case for case in CASES["cross_entropy"] if case.name.startswith("gpu-spatial"))
    inputs, _ = case.generate(0)
    logits, targets = inputs["logits"], inputs["targets"]
    assert logits.shape == (16, 4096, 1025)  # (N, d, C): class axis last, as in the spec.
    assert logits.size >= 10_000_000
    assert targets.shape == (16, 4096)
    # The float16 overflow needs the sum of the per-position losses past 65504.
    # Each loss is at least log(C) - (max logit - min logit).
    spread = float(logits.max() - logits.min())
    assert spread < 1.0
    counted = int((targets != IGNORE).sum())
    assert counted * (np.log(logits.shape[-1]) - spread) > 4 * 65504


@pytest.mark.skipif(len([name for name in INSTALLED if name in ("torch", "jax")]) < 2, reason="needs PyTorch and JAX")
def test_backends_in_separate_processes():
    selection = Selection(losses=("bradley_terry_loss",), dtypes=("float32",), modes=("eager",), groups=("small",))
    result = run_backends(["torch", "jax"], selection, jobs=2)
    pids = {name: run.environment["pid"] for name, run in result.backends.items()}
    assert pids["torch"] != pids["jax"]
    assert os.getpid() not in pids.values()
    assert all(run.records for run in result.backends.values())


# TF32 ----------------------------------------------------------------------


@pytest.mark.skipif("torch" not in INSTALLED, reason="needs PyTorch")
def test_torch_tf32_flags():
    import torch

    from backends.torch.runtime import Runtime

    if not hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        pytest.skip(f"PyTorch {torch.__version__} predates the fp32_precision settings")
    names = ("torch.backends.cuda.matmul.fp32_precision", "torch.backends.cudnn.conv.fp32_precision", "torch.backends.cudnn.rnn.fp32_precision")
    # A program that set the process-wide default to TF32 through the new API
    # before the runtime is built: the runtime must not raise and must turn TF32 off.
    torch.backends.fp32_precision = "tf32"
    try:
        runtime = Runtime("gpu")  # Building a runtime needs no GPU; it turns TF32 off.
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
        assert torch.backends.cudnn.rnn.fp32_precision == "ieee"
        assert torch.backends.fp32_precision == "ieee"
        settings = runtime.set_tf32(True)
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
        assert torch.backends.cudnn.rnn.fp32_precision == "tf32"
        assert torch.backends.fp32_precision == "ieee"  # CPU matmuls stay in float32.
        assert [settings[name] for name in names] == ["tf32"] * 3
    finally:
        settings = runtime.set_tf32(False)
    assert [settings[name] for name in names] == ["ieee"] * 3


@pytest.mark.skipif("torch" not in INSTALLED, reason="needs PyTorch")
def test_torch_legacy_tf32_flags():
    # The legacy flags and the new settings cannot be mixed in one process, so this runs in a fresh one.
    program = (
        "import torch\n"
        "from backends.torch.runtime import _set_legacy_tf32_flags\n"
        "on = _set_legacy_tf32_flags(True)\n"
        "off = _set_legacy_tf32_flags(False)\n"
        "print(on['torch.backends.cuda.matmul.allow_tf32'], on['torch.backends.cudnn.allow_tf32'], on['torch.get_float32_matmul_precision()'])\n"
        "print(off['torch.backends.cuda.matmul.allow_tf32'], off['torch.backends.cudnn.allow_tf32'], off['torch.get_float32_matmul_precision()'])\n"
    )
    completed = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split("\n")[:2] == ["True True high", "False False highest"]


@pytest.mark.skipif("jax" not in INSTALLED, reason="needs JAX")
def test_jax_tf32_flags():
    import jax

    from backends.jax.runtime import Runtime

    runtime = Runtime("gpu")
    assert jax.config.jax_default_matmul_precision == "highest"
    try:
        settings = runtime.set_tf32(True)
        assert jax.config.jax_default_matmul_precision == "tensorfloat32"
        assert settings == {"jax_default_matmul_precision": "tensorfloat32"}
    finally:
        runtime.set_tf32(False)
    assert jax.config.jax_default_matmul_precision == "highest"


@pytest.mark.skipif("tensorflow" not in INSTALLED, reason="needs TensorFlow")
def test_tensorflow_tf32_flags():
    import tensorflow as tf

    from backends.tensorflow.runtime import Runtime

    runtime = Runtime("gpu")
    assert tf.config.experimental.tensor_float_32_execution_enabled() is False
    try:
        settings = runtime.set_tf32(True)
        assert tf.config.experimental.tensor_float_32_execution_enabled() is True
        assert list(settings.values()) == [True]
    finally:
        runtime.set_tf32(False)
    assert tf.config.experimental.tensor_float_32_execution_enabled() is False


def test_tf32_tier_tolerances():
    assert "linear_cross_entropy" in TF32_LOSSES
    tier_value = tolerance_for("linear_cross_entropy", "value", "float32", tf32=True)
    assert tier_value.rtol == VALUE["float16"].rtol
    assert tolerance_for("linear_cross_entropy", "grad:hidden", "float32", tf32=True).rtol == GRADIENT["float16"].rtol
    assert "10 explicit mantissa bits" in tier_value.reason
    assert tolerance_for("linear_cross_entropy", "value", "float32").rtol == VALUE["float32"].rtol
    assert tolerance_for("linear_cross_entropy", "value", "float64", tf32=True) == VALUE["float64"]
    assert tolerance_for("linear_cross_entropy", "value", "bfloat16", tf32=True) == VALUE["bfloat16"]


def test_tf32_tier_only_matmul_losses():
    # TF32 changes only matmuls and convolutions, so a loss without one keeps its float32 tolerances.
    for loss in ("mse", "bradley_terry_loss", "dpo_loss", "cross_entropy"):
        assert loss not in TF32_LOSSES
        assert tolerance_for(loss, "value", "float32", tf32=True) == VALUE["float32"]
        assert tolerance_for(loss, "grad:x", "float32", tf32=True) == GRADIENT["float32"]


def test_tf32_tier_keeps_override(monkeypatch):
    loose = Tolerance(rtol=1e-2, atol=1e-7, atol_relative_to_max=True, reason="test override")
    monkeypatch.setitem(OVERRIDES, ("linear_cross_entropy", "value", "float32", "big-*"), loose)
    tier = tolerance_for("linear_cross_entropy", "value", "float32", "big-case", tf32=True)
    assert tier.rtol == 1e-2  # The override's looser rtol.
    assert tier.atol == VALUE["float16"].atol  # The tier's looser atol.
    assert tier.atol_relative_to_max is True  # Kept from the override, though the tier's value bound is absolute.
    assert "test override" in tier.reason


@pytest.mark.skipif("torch" not in INSTALLED, reason="needs PyTorch")
def test_tf32_tier_run_labelled():
    status, document, _ = _lossparity(
        "--backend", "torch", "--loss", "mse", "--dtype", "float32", "--mode", "eager", "--group", "small", "--tf32-tier-on-cpu"
    )  # fmt: skip
    assert status == 0
    assert document["environment"]["environment_id"] == environment_id("cpu", tf32=True)
    assert document["environment"]["environment_id"].endswith("-tf32")
    assert document["run"]["tf32"] is True
    precision = document["run"]["backends"]["torch"]["precision"]
    assert "tf32" in precision.values() or precision.get("torch.get_float32_matmul_precision()") == "high"
    values = [record for record in document["records"] if record["check"] == "value"]
    assert values
    assert {record["tolerance"] for record in values} == {"rtol=1e-05 atol=1e-05"}  # mse has no matmul.


def test_allow_tf32_needs_gpu(capsys):
    status = cli.main(["run", "--backend", "numpy", "--loss", "mse", "--allow-tf32"])
    assert status == cli.EXIT_USAGE
    assert "--allow-tf32 needs --device gpu" in capsys.readouterr().err


def test_tf32_switch_not_published(capsys):
    status = cli.main(["run", "--tf32-tier-on-cpu", "--publish"])
    assert status == cli.EXIT_USAGE
    assert "cannot be published" in capsys.readouterr().err


@pytest.mark.skipif("torch" not in INSTALLED, reason="needs PyTorch")
def test_correctness_tier_tf32_off():
    status, document, _ = _lossparity("--backend", "torch", "--loss", "mse", "--dtype", "float32", "--mode", "eager", "--group", "small")
    assert status == 0
    assert not document["environment"]["environment_id"].endswith("-tf32")
    precision = document["run"]["backends"]["torch"]["precision"]
    assert precision
    assert "tf32" not in precision.values()
    assert True not in precision.values()
    values = [record for record in document["records"] if record["check"] == "value"]
    assert {record["tolerance"] for record in values} == {"rtol=1e-05 atol=1e-05"}


# Determinism and device comparison ------------------------------------------


def test_bitwise_differences():
    a = [1.0, 0.0, float("nan"), 2.0]
    b = [1.0, -0.0, float("nan"), 2.0 + 2**-40]
    assert bitwise_differences(np.array(a), np.array(b)).tolist() == [False, True, False, True]


@pytest.mark.skipif(len([name for name in INSTALLED if name in ("torch", "jax")]) < 2, reason="needs PyTorch and JAX")
def test_cpu_against_cpu_zero_difference():
    status, document, _ = _lossparity(
        "--backend", "torch,jax", "--loss", "mse,bradley_terry_loss", "--dtype", "float32", "--mode", "eager",
        "--group", "small", "--determinism", "--compare-device", "cpu",
    )  # fmt: skip
    assert status == 0
    compared = [record for record in document["records"] if record["check"].startswith("cpu-vs-cpu:")]
    determinism = [record for record in document["records"] if record["check"] == "determinism"]
    assert {record["backend"] for record in compared} == {"torch", "jax"}
    assert {record["check"] for record in compared} >= {"cpu-vs-cpu:value", "cpu-vs-cpu:grad:predictions", "cpu-vs-cpu:grad:chosen_rewards"}
    assert all(record["status"] == "pass" for record in compared)
    assert all(record["max_rel_error_eps"] == 0.0 for record in compared)
    assert determinism
    assert all(record["status"] == "pass" for record in determinism)


@pytest.mark.skipif("torch" not in INSTALLED, reason="needs PyTorch")
def test_perturbed_device_caught():
    status, document, _ = _lossparity(
        "--backend", "unstable", "--loss", "mse", "--dtype", "float32", "--mode", "eager", "--group", "small",
        "--compare-device", "perturbed-cpu",
        extra_backends=UNSTABLE,
    )  # fmt: skip
    assert status == 1
    stable = [record for record in document["records"] if record["implementation"] == "stable" and record["case"] == "matrix-mean"]
    by_check = {record["check"]: record for record in stable}
    assert by_check["value"]["status"] == "pass"
    assert by_check["cpu-vs-perturbed-cpu:value"]["status"] == "fail"
    assert by_check["cpu-vs-perturbed-cpu:grad:predictions"]["status"] == "fail"
    # 2**-12 relative is 2**11 float32 eps.
    assert by_check["cpu-vs-perturbed-cpu:value"]["max_rel_error_eps"] == pytest.approx(2048, rel=0.01)


@pytest.mark.skipif("torch" not in INSTALLED, reason="needs PyTorch")
def test_nondeterminism_caught():
    status, document, _ = _lossparity(
        "--backend", "unstable", "--loss", "mse", "--dtype", "float32", "--mode", "eager", "--group", "small", "--determinism",
        extra_backends=UNSTABLE,
    )  # fmt: skip
    assert status == 1
    records = [record for record in document["records"] if record["case"] == "matrix-mean"]
    changing = {record["check"]: record for record in records if record["implementation"] == "changes-between-calls"}
    stable = {record["check"]: record for record in records if record["implementation"] == "stable"}
    assert changing["value"]["status"] == "pass"
    assert changing["determinism"]["status"] == "fail"
    assert "value" in changing["determinism"]["detail"]
    assert "grad:" not in changing["determinism"]["detail"]
    assert 0 < changing["determinism"]["max_rel_error_eps"] <= 1.0  # One ulp of a value near its own scale.
    assert stable["determinism"]["status"] == "pass"


def test_device_tolerance_stated():
    tolerance = device_tolerance("mse", "value", "float32")
    assert tolerance.rtol == VALUE["float32"].rtol
    assert "same implementation on two devices" in tolerance.reason


# The script of the GPU tier -----------------------------------------------


@needs_cpu_only_machine
@pytest.mark.skipif("torch" not in INSTALLED, reason="needs PyTorch")
def test_gpu_check_without_extra_packages(tmp_path):
    """Run conformance/gpu_check.sh with only the GPU machine's packages importable (see tests/gpu_machine_site)."""
    out = tmp_path / "gpu-environment"
    env = dict(os.environ)
    env.pop(backend_loader.EXTRA_BACKENDS_VARIABLE, None)
    env.update(
        PYTHON=sys.executable,
        PYTHONPATH=str(ROOT / "tests" / "gpu_machine_site"),
        GPU_CHECK_OUT=str(out),
        GPU_CHECK_LOSSES="mse",
        GPU_CHECK_DTYPES="float32",
    )
    hidden = subprocess.run([sys.executable, "-c", "import matplotlib"], env=env, capture_output=True, text=True)
    assert hidden.returncode != 0  # The site folder really hides a package outside the list.

    completed = subprocess.run(["bash", "conformance/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 1, completed.stderr  # No backend finds a GPU on this machine.
    assert "compiled: none" in completed.stderr  # The default compiled entries name losses outside GPU_CHECK_LOSSES.
    assert "Traceback" not in completed.stderr
    document = json.loads((out / "conformance.json").read_text())
    assert "tensorflow is not installed" in document["run"]["backends"]["tensorflow"]["unavailable"]
    assert "sees no CUDA device" in document["run"]["backends"]["torch"]["unavailable"]
    assert (out / "perf.json").exists()
    assert (tmp_path / "README.md").exists()


def _gpu_check_env(tmp_path: Path, **variables: str) -> dict:
    env = dict(os.environ)
    env.pop(backend_loader.EXTRA_BACKENDS_VARIABLE, None)
    env.update(
        PYTHON=sys.executable,
        PYTHONPATH=str(ROOT),
        GPU_CHECK_OUT=str(tmp_path / "gpu-environment"),
        GPU_CHECK_LOSSES="mse",
        GPU_CHECK_DTYPES="float32",
        GPU_CHECK_COMPILED="mse:float32",
        **variables,
    )
    return env


@needs_cpu_only_machine
def test_gpu_check_interrupt_stops(tmp_path):
    """Ctrl-C during the conformance step ends the script: no bench, no results index."""
    process = subprocess.Popen(
        ["bash", "conformance/gpu_check.sh"],
        cwd=ROOT,
        env=_gpu_check_env(tmp_path),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # Its own process group, as a terminal's foreground job has.
    )
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "conformance on the GPU" in line:
            break
    time.sleep(1.0)  # Let the CLI start its workers.
    os.killpg(process.pid, signal.SIGINT)  # What Ctrl-C sends: a signal to the whole group.
    lines += process.stderr.readlines()
    status = process.wait(timeout=300)
    stderr = "".join(lines)
    assert status == 130, stderr
    assert "bench" not in stderr.split("conformance on the GPU", 1)[1]
    assert not (tmp_path / "gpu-environment" / "perf.json").exists()
    assert not (tmp_path / "README.md").exists()


def test_gpu_check_budget_enforced(tmp_path):
    started = time.monotonic()
    completed = subprocess.run(
        ["bash", "conformance/gpu_check.sh"],
        cwd=ROOT,
        env=_gpu_check_env(tmp_path, CONFORMANCE_SECONDS="1", BUDGET_SECONDS="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 124, completed.stderr
    assert "conformance timed out after 1 s" in completed.stderr
    assert "bench skipped" in completed.stderr
    assert not (tmp_path / "gpu-environment" / "perf.json").exists()
    assert time.monotonic() - started < 120


def test_gpu_check_selection_described():
    script = (ROOT / "conformance" / "gpu_check.sh").read_text()
    defaults = {
        name: script.split(f"{name}=${{GPU_CHECK_{name}:-", 1)[1].split("}", 1)[0] for name in ("LOSSES", "DTYPES", "COMPILED")
    }
    for loss in defaults["LOSSES"].split(","):
        assert loss in report.GPU_CHECK_SELECTION
    for dtype in defaults["DTYPES"].split(","):
        assert dtype in report.GPU_CHECK_SELECTION
    for entry in defaults["COMPILED"].split(","):
        loss, dtype = entry.split(":")
        assert f"{loss} in {dtype}" in report.GPU_CHECK_SELECTION
    assert "--allow-tf32" not in script.split("conformance run", 1)[1].split("\n", 2)[0]
    assert "is not part of it" in report.GPU_CHECK_SELECTION


# Known failures and device checks -------------------------------------------


@pytest.mark.skipif("torch" not in INSTALLED, reason="needs PyTorch")
def test_known_failure_skips_device_checks():
    """A pattern ending in /* names the spec's checks; determinism and device checks stay pass or fail."""
    status, document, _ = _lossparity(
        "--backend", "unstable", "--loss", "mse", "--dtype", "float32", "--mode", "eager", "--group", "edge",
        "--determinism", "--compare-device", "cpu",
        extra_backends=UNSTABLE,
    )  # fmt: skip
    assert document is not None, status
    records = [record for record in document["records"] if record["implementation"] == "stable" and record["case"] == "zero-difference"]
    by_check = {record["check"]: record for record in records}
    assert by_check["value"]["status"] == "xpass"  # The fixture's pattern matches the spec check.
    assert by_check["determinism"]["status"] == "pass"
    assert "known_failure" not in by_check["determinism"]
    assert by_check["cpu-vs-cpu:value"]["status"] == "pass"
    assert "known_failure" not in by_check["cpu-vs-cpu:value"]


@pytest.mark.skipif("torch" not in INSTALLED, reason="needs PyTorch")
def test_unknown_comparison_device_rejected():
    status, document, _ = _lossparity("--backend", "torch", "--loss", "mse", "--dtype", "float32", "--mode", "eager", "--compare-device", "xyz")
    assert status == 1
    assert document["records"] == []
    reason = document["run"]["backends"]["torch"]["unavailable"]
    assert "'xyz' is not a device of this backend" in reason
    assert "cpu, gpu" in reason


# Options of run ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--loss", "mse", "--compiled-loss", "no_such_loss"], "unknown loss 'no_such_loss'"),
        (["--loss", "mse", "--compiled-loss", "mse:float8"], "unknown dtype 'float8'"),
        (["--loss", "mse", "--compiled-loss", "cross_entropy"], "which --loss does not select"),
        (["--loss", "mse", "--dtype", "float32", "--compiled-loss", "mse:float16"], "which --dtype does not select"),
        (["--loss", "mse", "--mode", "eager", "--compiled-loss", "mse"], "--mode does not select it"),
        (["--loss", "mse", "--cpu-comparison"], "needs --device gpu"),
        (["--loss", "mse", "--group", "gpu"], "only with --device gpu"),
    ],
)
def test_run_option_errors(capsys, arguments, message):
    status = cli.main(["run", "--backend", "numpy", *arguments])
    assert status == cli.EXIT_USAGE
    assert message in capsys.readouterr().err


@pytest.mark.skipif("torch" not in INSTALLED, reason="needs PyTorch")
def test_compiled_loss_limits_plan():
    selection = Selection(
        losses=("mse", "bradley_terry_loss"),
        dtypes=("float32", "float16"),
        modes=("eager", "compiled"),
        groups=("small",),
        compiled_losses=("mse:float32", "bradley_terry_loss"),
    )
    units = Worker.load("torch", selection, "cpu").plan()
    compiled = {(unit.loss, unit.dtype) for unit in units if unit.mode == "compiled"}
    eager = {(unit.loss, unit.dtype) for unit in units if unit.mode == "eager"}
    assert compiled == {("mse", "float32"), ("bradley_terry_loss", "float32"), ("bradley_terry_loss", "float16")}
    assert ("mse", "float16") in eager


def test_gpu_check_preset():
    from conformance.bench.presets import GPU, PRESETS

    preset = PRESETS["gpu-check"]
    assert len(preset.cases) == 5
    gpu_shapes = {(case.loss, tuple(case.dims.items()), case.dtype) for case in GPU.cases}
    for case in preset.cases:
        assert (case.loss, tuple(case.dims.items()), case.dtype) in gpu_shapes or case.loss == "bradley_terry_loss"
    eager_only = [case for case in preset.cases if case.modes == ("eager",)]
    assert [case.dims for case in eager_only] == [{"N": 16384, "V": 128256}]


# Reports ---------------------------------------------------------------------


def _record(check: str, status: str, backend: str = "torch", eps: float | None = 0.0) -> dict:
    return {
        "loss": "mse", "backend": backend, "implementation": "mirror", "kind": "mirror", "dtype": "float32", "mode": "eager",
        "device": "gpu", "case": "matrix-mean", "group": "small", "check": check, "status": status,
        "max_abs_error": None, "max_rel_error_eps": eps, "tolerance": None, "detail": "measured" if status == "fail" else "",
    }  # fmt: skip


def test_summary_counts_device_checks_apart():
    records = [_record("value", "pass"), _record("grad:predictions", "pass"), _record("determinism", "pass"), _record("gpu-vs-cpu:value", "fail")]
    lines = report.summary_table(records)
    assert lines[0] == "| backend | pass | determinism and device checks |"
    assert lines[2] == "| torch | 2 | pass 1, fail 1 |"
    assert report.summary_table(records[:2])[0] == "| backend | pass |"


def test_index_counts_device_checks_apart(tmp_path):
    from conformance.environment import describe

    document = {
        "schema": 1,
        "environment": {**describe("gpu"), "environment_id": "linux-x86_64-gpu-h200-16cores"},
        "run": {
            "command": "lossparity run --device gpu",
            "seed": 0,
            "backends": {"torch": {}},
            "wall_seconds": 1.0,
            "compile_seconds": 0.0,
            "losses": ["mse"],
            "dtypes": ["float32"],
            "modes": ["eager"],
        },
        "records": [_record("value", "pass"), _record("determinism", "pass"), _record("gpu-vs-cpu:value", "fail")],
    }
    folder = tmp_path / "linux-x86_64-gpu-h200-16cores"
    folder.mkdir()
    (folder / "conformance.json").write_text(json.dumps(document))
    text = report.write_index(tmp_path).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| [linux-x86_64-gpu-h200-16cores]"))
    assert "| 1 | 2 | 1 device-check failures |" in row
    assert "GPU results: linux-x86_64-gpu-h200-16cores. The command that made each one is in its `conformance.md`." in text
    assert "gpu_check.sh made" not in text


def test_gpu_note_without_gpu_runs(tmp_path):
    text = "\n".join(report._gpu_note(tmp_path))
    assert "still to be made" in text
    assert "bash conformance/gpu_check.sh" in text
    assert "The TF32 tier (--allow-tf32) is not part of it" in " ".join(text.split())


def test_device_section():
    records = [_record("determinism", "pass"), _record("gpu-vs-cpu:value", "pass", eps=0.5), _record("gpu-vs-cpu:grad:predictions", "fail", eps=3000.0)]
    lines = report._device_section(records)
    assert lines[0] == "## Determinism and device agreement"
    row = next(line for line in lines if line.startswith("| torch | mirror | float32 | eager |"))
    assert row == "| torch | mirror | float32 | eager | pass 1 (max 0 eps) | pass 1, **FAIL 1** (max 3e+03 eps) |"
    assert any("gpu-vs-cpu:grad:predictions` fail: measured" in line for line in lines)


def test_device_lines():
    run = {
        "tf32": False,
        "determinism": True,
        "compare_device": "cpu",
        "compiled_losses": ["mse:float32"],
        "backends": {"torch": {"device_name": "NVIDIA H200 (CUDA 12.8)", "precision": {"torch.backends.cuda.matmul.fp32_precision": "ieee"}}},
    }
    lines = report._device_lines(run)
    assert lines[0] == "- TF32: off in every framework (the correctness tier)"
    assert "bit for bit" in lines[1]
    assert "on cpu in the same worker" in lines[1]
    assert "compiled mode only for mse:float32" in lines[1]
    assert lines[2] == "- torch: NVIDIA H200 (CUDA 12.8); torch.backends.cuda.matmul.fp32_precision = ieee"
    assert report._device_lines({**run, "tf32": True})[0].startswith("- TF32 tier:")


def test_readme_summary_cpu_correctness_only(tmp_path):
    from conformance.environment import describe

    readme = tmp_path / "README.md"
    original = f"intro\n{report.SUMMARY_START}\nold\n{report.SUMMARY_END}\nend\n"
    run = {"command": "lossparity run --publish", "wall_seconds": 10.0, "compile_seconds": 1.0, "tf32": False}
    records = [_record("value", "pass")]
    for device, tf32 in (("gpu", False), ("gpu", True), ("cpu", True)):
        readme.write_text(original)
        document = {"environment": describe(device, tf32), "run": {**run, "tf32": tf32}, "records": records}
        assert report.update_readme_summary(readme, document, "results/x/conformance.md") is False
        assert readme.read_text() == original
    document = {"environment": describe("cpu"), "run": run, "records": records}
    assert report.update_readme_summary(readme, document, "results/x/conformance.md") is True
    text = readme.read_text()
    assert "(device cpu, correctness tier: TF32 off)" in text
    assert "old" not in text


def test_cli_summary_counts_device_checks_apart(capsys):
    from types import SimpleNamespace

    records = [_record("value", "pass"), _record("determinism", "fail")]
    run = SimpleNamespace(records=records, unavailable=None, seconds=3.0)
    document = {"records": records, "run": {"wall_seconds": 3.0, "compile_seconds": 0.0}}
    cli._print_summary(document, SimpleNamespace(backends={"torch": run}), None)
    output = capsys.readouterr().out
    assert "determinism and device checks" in output
    assert "fail 1" in output
    table_row = next(line for line in output.splitlines() if "torch" in line and "│" in line)
    assert table_row.split("│")[2].strip() == "1"  # The pass column counts the spec check only.


# Environment id ----------------------------------------------------------------


def test_gpu_model_in_environment_id(monkeypatch):
    from conformance import environment

    assert environment.gpu_model_slug("NVIDIA H200") == "h200"
    assert environment.gpu_model_slug("NVIDIA H100 80GB HBM3") == "h100-80gb-hbm3"
    assert environment.gpu_model_slug(None) == ""
    monkeypatch.setattr(environment, "gpu_model", lambda: "NVIDIA H200")
    assert environment.environment_id("gpu") == f"linux-{platform.machine()}-gpu-h200-{os.cpu_count()}cores"
    assert environment.environment_id("gpu", tf32=True).endswith("-gpu-h200-" + f"{os.cpu_count()}cores-tf32")
    assert environment.environment_id("cpu") == f"linux-{platform.machine()}-cpu-{os.cpu_count()}cores"
    monkeypatch.setattr(environment, "gpu_model", lambda: None)
    assert environment.environment_id("gpu") == f"linux-{platform.machine()}-gpu-{os.cpu_count()}cores"
