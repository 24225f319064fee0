"""Tests of the Keras subjects (backends/subjects/keras.py) against real Keras 3.

Keras fixes its backend when it is first imported, so every check that runs
Keras does so in a subprocess with KERAS_BACKEND set, as the runner's workers do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("jax", "torch", "tensorflow")


def run_python(code: str, keras_backend: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "KERAS_BACKEND"}
    if keras_backend is not None:
        environment["KERAS_BACKEND"] = keras_backend
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout
    )


def last_json_line(output: str):
    return json.loads(output.strip().splitlines()[-1])


def test_declarations_load_without_keras():
    result = run_python(
        """
        import json, sys
        from backends.subjects import keras as subject
        declarations = subject.jax_declarations() + subject.torch_declarations() + subject.tensorflow_declarations()
        summary = [[item.subject, item.backend, item.loss, item.name, dict(item.environment)] for item in declarations]
        print(json.dumps({"keras_imported": "keras" in sys.modules, "declarations": summary}))
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    document = last_json_line(result.stdout)
    assert document["keras_imported"] is False
    declarations = document["declarations"]
    for backend in BACKENDS:
        own = [item for item in declarations if item[1] == backend]
        assert {item[2] for item in own} == {"cross_entropy", "binary_cross_entropy_with_logits", "kl_divergence", "mse", "ctc_loss"}
        assert all(item[0] == f"keras-{backend}" for item in own)
        assert all(item[4] == {"KERAS_BACKEND": backend} for item in own)


def test_cli_check_keras_jax_statuses():
    # mse runs its small and edge cases, cross_entropy its small ones, to bound the run time.
    base = [sys.executable, "-m", "conformance.cli", "check", "keras-jax", "--dtype", "float32", "--mode", "eager", "--format", "json", "--no-progress"]
    records = []
    for loss, groups in (("mse", ("small", "edge")), ("cross_entropy", ("small",))):
        command = base + ["--loss", loss] + [item for group in groups for item in ("--group", group)]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (loss, result.stdout[-2000:], result.stderr[-3000:])
        records += json.loads(result.stdout)["records"]
    status = {(record["loss"], record["case"], record["check"]): record for record in records}

    assert {record["backend"] for record in records} == {"keras-jax"}
    assert not [record for record in records if record["status"] in ("fail", "error", "crash", "timeout")]
    assert status[("mse", "matrix-mean", "value")]["status"] == "pass"
    assert status[("mse", "matrix-sum", "value")]["status"] == "difference"
    assert status[("mse", "matrix-sum", "value")]["difference"] == "mean-over-last-axis"
    assert status[("mse", "scalar-none", "value")]["difference"] == "needs-a-batch-axis"
    assert status[("mse", "empty-mean", "value")]["difference"] == "empty-batch-keeps-shape"
    assert status[("cross_entropy", "index-mean", "value")]["status"] == "pass"
    assert status[("cross_entropy", "ignore-mean", "grad:logits")]["status"] == "pass"
    assert status[("cross_entropy", "probabilities-mean", "value")]["status"] == "pass"
    assert status[("cross_entropy", "weight-mean", "value")]["status"] == "unsupported"
    assert status[("cross_entropy", "z-loss-mean", "value")]["status"] == "unsupported"


def test_mse_sum_is_spec_sum_over_last_axis():
    """The mean-over-last-axis difference states that Keras's 'sum' is the spec's sum divided by the last axis' size."""
    result = run_python(
        """
        import json
        import numpy as np
        import keras
        from backends.subjects.keras import mse
        rng = np.random.default_rng(3)
        predictions, targets = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
        value = mse(keras.ops.convert_to_tensor(predictions), keras.ops.convert_to_tensor(targets), reduction="sum")
        print(json.dumps({"keras": float(value), "predictions": predictions.tolist(), "targets": targets.tolist()}))
        """,
        keras_backend="jax",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    document = last_json_line(result.stdout)
    spec_sum = float(np.sum((np.array(document["predictions"]) - np.array(document["targets"])) ** 2))
    assert document["keras"] == pytest.approx(spec_sum / 4, rel=1e-5)
    assert document["keras"] != pytest.approx(spec_sum, rel=1e-2)


def test_kl_clip_difference_applies_only_with_tiny_probabilities():
    """KLDivergence's clip to [1e-7, 1] explains its error where q = 1e-9, and the predicate flags only that case."""
    result = run_python(
        """
        import json
        import numpy as np
        import keras
        from backends.subjects.keras import kl_divergence
        targets = np.array([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]])
        cases = {
            "tiny-prediction": np.log(np.array([[1e-9, 0.5, 0.5 - 1e-9], [0.6, 0.2, 0.2]])),
            "moderate-probabilities": np.log(np.array([[0.3, 0.5, 0.2], [0.6, 0.2, 0.2]])),
        }
        values = {}
        for name, log_q in cases.items():
            value = kl_divergence(keras.ops.convert_to_tensor(log_q), keras.ops.convert_to_tensor(targets), reduction="none")
            values[name] = keras.ops.convert_to_numpy(value).astype(float).tolist()
        print(json.dumps({"values": values, "targets": targets.tolist(), "log_q": {k: v.tolist() for k, v in cases.items()}}))
        """,
        keras_backend="jax",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    document = last_json_line(result.stdout)

    import losses
    from backends.subjects.keras import KL_CLIPS

    p = np.array(document["targets"])
    for name, applies in (("tiny-prediction", True), ("moderate-probabilities", False)):
        log_q = np.array(document["log_q"][name])
        keras_value = np.array(document["values"][name])
        spec_value = losses.SPECS["kl_divergence"].function(log_q, p, reduction="none")
        clipped_p, clipped_q = np.clip(p, 1e-7, 1), np.clip(np.exp(log_q), 1e-7, 1)
        clipped_value = np.sum(clipped_p * np.log(clipped_p / clipped_q), axis=-1)

        assert KL_CLIPS.applies({"log_predictions": log_q, "targets": p}, {"reduction": "none"}, "float32") is applies
        np.testing.assert_allclose(keras_value, clipped_value, rtol=1e-5, atol=1e-6)
        if applies:
            # Row 0 has 0.5 log(0.5 / 1e-9) = 10.0 in the spec and 0.5 log(0.5 / 1e-7) = 7.7 after the clip.
            assert keras_value[0] == pytest.approx(spec_value[0] - 0.5 * np.log(100), rel=1e-5)
        else:
            np.testing.assert_allclose(keras_value, spec_value, rtol=1e-5, atol=1e-6)


GRID_LOGITS = [np.inf, -np.inf, 0.5]
GRID_TARGETS = [0.0, 0.25, 1.0]
# json writes and reads infinities as Infinity, so the grid reaches the subprocess intact.
GRID = json.dumps({"logits": [x for x in GRID_LOGITS for _ in GRID_TARGETS], "targets": [y for _ in GRID_LOGITS for y in GRID_TARGETS]})


@pytest.mark.parametrize("backend", BACKENDS)
def test_bce_nan_difference_matches_keras(backend):
    """Each backend's infinite-logits difference flags exactly the elements where Keras's BinaryCrossentropy is NaN."""
    result = run_python(
        f"""
        import json
        import numpy as np
        import keras
        from backends.subjects.keras import binary_cross_entropy_with_logits
        grid = json.loads({GRID!r})
        logits = np.array([grid["logits"]], dtype=np.float32)
        targets = np.array([grid["targets"]], dtype=np.float32)
        value = binary_cross_entropy_with_logits(
            keras.ops.convert_to_tensor(logits), keras.ops.convert_to_tensor(targets), reduction="none"
        )
        print(json.dumps(np.isnan(keras.ops.convert_to_numpy(value)).tolist()))
        """,
        keras_backend=backend,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    keras_nan = np.array(last_json_line(result.stdout))[0]

    from backends.subjects.keras import BCE_NAN_AT_INFINITE_LOGITS

    difference = BCE_NAN_AT_INFINITE_LOGITS[backend]
    flagged = [
        difference.applies({"logits": np.array([[x]]), "targets": np.array([[y]]), "weight": None}, {}, "float32")
        for x in GRID_LOGITS
        for y in GRID_TARGETS
    ]
    assert keras_nan.any()
    assert keras_nan.tolist() == flagged
