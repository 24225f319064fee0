"""lossparity check and the plug-in API: a user's function, right or wrong, through the real CLI and worker."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conformance import plugin
from conformance.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- check-example:start -->")[1].split("<!-- check-example:end -->")[0]
    return re.search(r"```python\n(.*?)```", block, re.S).group(1)


def _check(folder: Path, *arguments: str) -> subprocess.CompletedProcess:
    """Run lossparity check from folder, as a user in their own project would."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "conformance.cli", "check", *arguments, "--no-progress"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_readme_example_reports_its_failures(tmp_path):
    (tmp_path / "my_losses.py").write_text(_readme_example())
    result = _check(tmp_path, "my_losses:reward_loss", "--dtype", "float32", "--out", str(tmp_path / "out"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL differences-1e4, value: float32 eager, float32 compiled" in result.stdout
    assert "FAIL empty-batch-mean, value: float32 eager" in result.stdout
    assert "not covered: my_losses:reward_loss takes no margin argument" in result.stdout
    document = json.loads((tmp_path / "out" / "conformance.json").read_text())
    statuses = {record["status"] for record in document["records"]}
    assert statuses == {"pass", "fail", "unsupported"}
    assert {record["kind"] for record in document["records"]} == {"subject"}


def test_readme_fix_passes(tmp_path):
    fixed = _readme_example().replace("-torch.log(torch.sigmoid(chosen - rejected))", "-torch.nn.functional.logsigmoid(chosen - rejected)")
    fixed = fixed.replace("losses.mean()", "losses.sum() / max(losses.numel(), 1)")
    assert fixed != _readme_example()
    (tmp_path / "my_losses.py").write_text(fixed)
    result = _check(tmp_path, "my_losses:reward_loss", "--dtype", "float32")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fail" not in result.stdout.lower().replace("failed", "")
    assert re.search(r"against the spec bradley_terry_loss: pass \d+, unsupported \d+\n", result.stdout), result.stdout


def test_undecorated_function_needs_loss_and_backend(tmp_path):
    (tmp_path / "plain.py").write_text(
        textwrap.dedent(
            """
            def mse(predictions, targets, *, reduction="mean"):
                squared = (predictions - targets) ** 2
                if reduction == "none":
                    return squared
                return squared.sum() if reduction == "sum" else squared.sum() / max(squared.size, 1)
            """
        )
    )
    missing = _check(tmp_path, "plain:mse")
    assert missing.returncode == 2
    assert "--loss and --backend" in missing.stderr
    result = _check(tmp_path, "plain:mse", "--loss", "mse", "--backend", "jax", "--dtype", "float64", "--mode", "eager")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"plain:mse against the spec mse: pass \d+\n", result.stdout), result.stdout
    numpy = _check(tmp_path, "plain:mse", "--loss", "mse", "--backend", "numpy")
    assert numpy.returncode == 2
    assert "--backend 'numpy' is invalid" in numpy.stderr


def test_unknown_target_is_a_usage_error(tmp_path, capsys):
    assert main(["check", "no_such_module:fn"]) == 2
    assert "module 'no_such_module' of 'no_such_module:fn' was not found" in capsys.readouterr().err
    assert main(["check", "no-such-entry-point"]) == 2
    error = capsys.readouterr().err
    assert "neither package.module:function nor a registered entry point" in error
    assert "transformers" in error  # The registered names are listed.


def test_declaration_rejects_unknown_names():
    with pytest.raises(plugin.PluginError, match="loss 'crossentropy' is not a spec loss"):
        plugin.declare(lambda logits, targets: 0, loss="crossentropy", backend="torch")
    with pytest.raises(plugin.PluginError, match="backend 'pytorch' is unknown"):
        plugin.declare(lambda logits, targets: 0, loss="cross_entropy", backend="pytorch")
    with pytest.raises(plugin.PluginError, match="no automatic differentiation"):
        plugin.declare(lambda logits, targets: 0, loss="cross_entropy", backend="numpy")
    with pytest.raises(plugin.PluginError, match="arguments names 'input'"):
        plugin.declare(lambda logits, targets: 0, loss="cross_entropy", backend="torch", arguments={"input": "x"})


def test_mapping_and_coverage_rules():
    calls = []

    def user(x, y, *, reduction="mean"):
        calls.append((x, y, reduction))
        return 0.0

    declaration = plugin.declare(user, loss="cross_entropy", backend="jax", arguments={"logits": "x", "targets": "y"}, supports={"reduction": ("mean", "sum")})
    implementation = plugin.implementation(declaration)
    inputs = {"logits": np.zeros((2, 3)), "targets": np.zeros(2, dtype=np.int64), "weight": None}
    assert implementation.unsupported(inputs, {"reduction": "mean"}) is None
    assert "supports reduction in ('mean', 'sum'), not 'none'" in implementation.unsupported(inputs, {"reduction": "none"})
    assert "takes no weight argument" in implementation.unsupported({**inputs, "weight": np.ones(3)}, {})
    assert "takes no label_smoothing argument" in implementation.unsupported(inputs, {"label_smoothing": 0.1})
    assert implementation.unsupported(inputs, {"label_smoothing": 0.0}) is None  # The spec default is no option at all.
    implementation.function(inputs["logits"], inputs["targets"], weight=None, reduction="sum", ignore_index=-100)
    x, y, reduction = calls[-1]
    assert x is inputs["logits"]
    assert y is inputs["targets"]
    assert reduction == "sum"


def test_registered_subjects_load_without_their_libraries():
    code = (
        "import sys; from conformance import plugin;"
        "names = ['transformers', 'keras-jax', 'keras-torch', 'keras-tensorflow'];"
        "loaded = [plugin.load(name) for name in names];"
        "assert all(loaded);"
        "print(sorted(m for m in ('keras', 'transformers', 'torch', 'jax', 'tensorflow') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_declaration_rejects_bad_mappings():
    def user(input, target, reduction="mean"):
        return 0.0

    with pytest.raises(plugin.PluginError, match="maps predictions to 'inptu', which the function does not take"):
        plugin.declare(user, loss="mse", backend="torch", arguments={"predictions": "inptu", "targets": "target"})
    with pytest.raises(plugin.PluginError, match="maps several spec arguments to 'input'"):
        plugin.declare(user, loss="mse", backend="torch", arguments={"predictions": "input", "targets": "input"})
    with pytest.raises(plugin.PluginError, match=r"supports\['reduction'\] is 'mean'; expected a tuple"):
        plugin.declare(user, loss="mse", backend="torch", arguments={"predictions": "input", "targets": "target"}, supports={"reduction": "mean"})


def test_positional_only_values_and_layout():
    calls = []

    def user(x, y, /, mode="average"):
        calls.append((x, y, mode))
        return [x, y]

    declaration = plugin.declare(
        user,
        loss="mse",
        backend="jax",
        arguments={"predictions": "x", "targets": "y", "reduction": "mode"},
        values={"reduction": {"mean": "average", "sum": "total"}},
        convert={"predictions": lambda array: array * 10},
        output=lambda result: result[0],
    )
    implementation = plugin.implementation(declaration)
    assert implementation.function(np.ones(2), np.zeros(2), reduction="sum").tolist() == [10.0, 10.0]
    x, y, mode = calls[-1]
    assert x.tolist() == [10.0, 10.0]
    assert y.tolist() == [0.0, 0.0]
    assert mode == "total"
    assert implementation.unsupported({"predictions": np.ones(2), "targets": np.zeros(2)}, {"reduction": "none"}) is None
