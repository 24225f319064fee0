"""Tests of the fuzzer: valid strategies, a bounded derandomised profile, shrinking and regression files.

The bounded profile runs a fixed seed and a few dozen examples per loss, so
it finishes in about a minute on 2 cores; ``python -m conformance.fuzz`` runs
the unbounded profile. The wrong mirrors of tests/wrong_backend run on the real
PyTorch runtime, registered through LOSSPARITY_EXTRA_BACKENDS.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import losses
from conformance import backend_loader
from conformance.cases import REGRESSION_GROUP, cases_for
from conformance.fuzz import regression, runner
from conformance.fuzz.command import build_parser, command_fuzz
from conformance.fuzz.strategies import STRATEGIES
from conformance.worker import Selection, Worker

EXTRA_BACKENDS = "wrong=tests.wrong_backend"


@pytest.fixture
def regression_folder(tmp_path, monkeypatch):
    """Point the regression folder at an empty temporary folder, so no test writes to the repository."""
    folder = tmp_path / "regressions"
    monkeypatch.setenv(regression.DIRECTORY_VARIABLE, str(folder))
    return folder


def test_strategies_cover_every_spec_loss():
    assert set(STRATEGIES) == set(losses.SPECS)


@pytest.mark.parametrize("loss", sorted(losses.SPECS))
def test_strategy_stays_in_spec_domain(loss, regression_folder):
    # The numpy backend evaluates the spec itself, so the spec must accept
    # every drawn example. Its outputs are rounded to the tested dtype, and a
    # gradient that underflows there can still fail the comparison, so only
    # invalid inputs are asserted here.
    worker = runner.load_worker("numpy", (loss,))
    result = runner.fuzz("numpy", loss, 25, derandomize=True, worker=worker, save=False)
    assert result.examples == 25
    invalid = [finding.summary() for finding in result.findings if finding.kind == "invalid-input"]
    assert invalid == []


# Losses whose torch implementations pass the derandomised profile: a new
# counterexample in them fails this test. The fuzzing summary lists the
# counterexamples of the other losses.
TORCH_PROFILE = ("mse", "bradley_terry_loss", "kl_penalty", "gae", "sequence_logps")


@pytest.mark.parametrize("loss", TORCH_PROFILE)
def test_torch_bounded_profile(loss, regression_folder):
    worker = runner.load_worker("torch", (loss,))
    result = runner.fuzz("torch", loss, 40, derandomize=True, worker=worker, save=False)
    assert result.examples == 40
    assert result.implementations
    assert [finding.summary() for finding in result.findings] == []


def test_derandomised_runs_draw_same_examples(regression_folder):
    drawn = []
    for _ in range(2):
        seen = []
        runner.fuzz("numpy", "mse", 10, derandomize=True, save=False, progress=lambda state: seen.append(state["examples"]))
        drawn.append(seen)
    assert drawn[0] == list(range(1, 11))
    assert drawn[0] == drawn[1]


def test_wrong_mirror_found_shrunk_and_replayed(regression_folder, monkeypatch):
    monkeypatch.setenv(backend_loader.EXTRA_BACKENDS_VARIABLE, EXTRA_BACKENDS)
    result = runner.fuzz("wrong", "bradley_terry_loss", 60, derandomize=True, implementations=["margin-not-detached"])

    assert len(result.findings) == 1
    finding = result.findings[0]
    assert finding.kind == "counterexample"
    assert (finding.implementation, finding.check, finding.status) == ("margin-not-detached", "grad:margin", "fail")
    # Shrunk: the smallest batch that has a margin, one pair or a 0-d pair.
    assert finding.shapes["margin"] is not None
    assert int(np.prod(finding.shapes["margin"])) == 1
    assert finding.saved is not None

    document, inputs, options = regression.load(finding.saved)
    assert document["implementation"] == "margin-not-detached"
    assert document["check"] == "grad:margin"
    assert inputs["margin"] is not None

    replayed = [case for case in cases_for("bradley_terry_loss") if case.group == REGRESSION_GROUP]
    assert [case.name for case in replayed] == [document["case"]]
    assert replayed[0].dtypes == regression.replay_dtypes(document["dtype"])

    statuses = {}
    for backend in ("wrong", "torch"):
        selection = Selection(losses=("bradley_terry_loss",), dtypes=replayed[0].dtypes, modes=("eager",), groups=(REGRESSION_GROUP,))
        worker = Worker.load(backend, selection)
        for unit in worker.plan():
            for record in worker.execute(unit):
                statuses[(backend, record["implementation"], record["dtype"], record["check"])] = record["status"]
    dtype = document["dtype"]
    assert statuses[("wrong", "margin-not-detached", dtype, "grad:margin")] == "fail"
    torch_statuses = {key: status for key, status in statuses.items() if key[0] == "torch"}
    assert torch_statuses
    assert set(torch_statuses.values()) == {"pass"}


def test_command_exit_status_and_summary(regression_folder, monkeypatch, tmp_path):
    monkeypatch.setenv(backend_loader.EXTRA_BACKENDS_VARIABLE, EXTRA_BACKENDS)
    out = tmp_path / "out"
    arguments = ["--backend", "wrong", "--loss", "bradley_terry_loss", "--examples", "30", "--derandomize", "--out", str(out), "--no-progress"]
    status = command_fuzz(build_parser().parse_args(arguments), usage_error=ValueError)
    assert status == 1
    summary = json.loads((out / "fuzz-wrong.json").read_text())
    entry = summary["losses"]["bradley_terry_loss"]
    assert entry["counterexamples"] >= 1
    assert entry["examples"] >= 1
    assert entry["regression"]["cases"] == entry["counterexamples"]

    clean = ["--backend", "numpy", "--loss", "mse", "--examples", "10", "--derandomize", "--no-progress"]
    assert command_fuzz(build_parser().parse_args(clean), usage_error=ValueError) == 0


@pytest.mark.parametrize(
    "arguments, words",
    [
        (["--backend", "nonsense"], ["unknown backend", "nonsense"]),
        (["--backend", "numpy", "--loss", "not_a_loss"], ["unknown loss", "not_a_loss"]),
        (["--backend", "numpy", "--examples", "0"], ["--examples", "0", "positive"]),
        (["--backend", "numpy", "--seed", "-3"], ["--seed", "-3", "non-negative"]),
    ],
)
def test_command_usage_errors(arguments, words):
    with pytest.raises(ValueError) as raised:
        command_fuzz(build_parser().parse_args(arguments), usage_error=ValueError)
    for word in words:
        assert word in str(raised.value)


def _saved_case(folder) -> tuple:
    """Save one small regression case directly; return its .json and .npz paths."""
    inputs = {"chosen_rewards": np.array([0.5, -1.0]), "rejected_rewards": np.array([0.0, 2.0]), "margin": None}
    options = {"center_coefficient": 0.0, "reduction": "mean"}
    record = {"implementation": "example", "check": "value", "status": "fail", "max_abs_error": 0.25, "max_rel_error_eps": 3.0, "tolerance": "rtol=1e-05 atol=1e-05", "detail": "made up"}
    json_path = regression.save("bradley_terry_loss", inputs, options, "float32", record, backend="torch", seed=7, hypothesis_version="0", folder=folder)
    return json_path, json_path.with_suffix(".npz")


def test_regression_round_trip(tmp_path):
    json_path, npz_path = _saved_case(tmp_path)
    document, inputs, options = regression.load(json_path)
    assert document["case"] == "fuzz-" + json_path.stem
    np.testing.assert_array_equal(inputs["chosen_rewards"], [0.5, -1.0])
    assert inputs["margin"] is None
    assert options == {"center_coefficient": 0.0, "reduction": "mean"}
    with zipfile.ZipFile(npz_path) as archive:
        assert sorted(archive.namelist()) == ["chosen_rewards.npy", "rejected_rewards.npy"]


def test_regression_rejects_corrupt_json(tmp_path):
    json_path, _ = _saved_case(tmp_path)
    json_path.write_text("{ this is not json", encoding="utf-8")
    with pytest.raises(regression.RegressionFileError) as raised:
        regression.load(json_path)
    assert str(json_path) in str(raised.value)
    assert "invalid JSON" in str(raised.value)


def test_regression_rejects_truncated_json(tmp_path):
    json_path, _ = _saved_case(tmp_path)
    text = json_path.read_text(encoding="utf-8")
    json_path.write_text(text[: len(text) // 2], encoding="utf-8")
    with pytest.raises(regression.RegressionFileError) as raised:
        regression.load(json_path)
    assert str(json_path) in str(raised.value)


def test_regression_rejects_missing_keys(tmp_path):
    json_path, _ = _saved_case(tmp_path)
    document = json.loads(json_path.read_text(encoding="utf-8"))
    del document["options"], document["dtype"]
    json_path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(regression.RegressionFileError) as raised:
        regression.load(json_path)
    message = str(raised.value)
    assert str(json_path) in message
    assert "missing keys dtype, options" in message


def test_regression_rejects_wrong_type(tmp_path):
    json_path, _ = _saved_case(tmp_path)
    document = json.loads(json_path.read_text(encoding="utf-8"))
    document["seed"] = "seven"
    json_path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(regression.RegressionFileError) as raised:
        regression.load(json_path)
    assert "'seed'" in str(raised.value)
    assert "expected int or null" in str(raised.value)


def test_regression_rejects_truncated_npz(tmp_path):
    json_path, npz_path = _saved_case(tmp_path)
    content = npz_path.read_bytes()
    npz_path.write_bytes(content[: len(content) // 2])
    with pytest.raises(regression.RegressionFileError) as raised:
        regression.load(json_path)
    assert str(npz_path) in str(raised.value)
    assert "SHA-256" in str(raised.value)


def test_regression_rejects_pickled_arrays(tmp_path):
    # An object array is stored as a pickle; loading it must fail, not run it.
    json_path, npz_path = _saved_case(tmp_path)
    objects = np.empty(2, dtype=object)
    objects[:] = [0.0, 2.0]
    np.savez(npz_path, chosen_rewards=np.array([0.5, -1.0]), rejected_rewards=objects)
    document = json.loads(json_path.read_text(encoding="utf-8"))
    import hashlib

    document["npz_sha256"] = hashlib.sha256(npz_path.read_bytes()).hexdigest()
    json_path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(regression.RegressionFileError) as raised:
        regression.load(json_path)
    assert str(npz_path) in str(raised.value)
    assert "allow_pickle" in str(raised.value)


def test_cases_for_reports_corrupt_regression_file(regression_folder):
    json_path, _ = _saved_case(regression_folder)
    json_path.write_text("[]", encoding="utf-8")
    [unreadable] = [case for case in cases_for("bradley_terry_loss") if case.group == REGRESSION_GROUP]
    assert unreadable.name == "fuzz-" + json_path.stem
    with pytest.raises(regression.RegressionFileError) as raised:
        unreadable.generate(0)
    assert str(json_path) in str(raised.value)


def test_corrupt_regression_file_is_one_error(regression_folder):
    # The unreadable case becomes an error record of each implementation, and the other cases still run.
    json_path, _ = _saved_case(regression_folder)
    json_path.write_text("{ truncated", encoding="utf-8")
    selection = Selection(losses=("bradley_terry_loss",), dtypes=("float64",), modes=("eager",), groups=("small", REGRESSION_GROUP))
    worker = Worker.load("numpy", selection)
    records = [record for unit in worker.plan() for record in worker.execute(unit)]
    errors = [record for record in records if record["status"] == "error"]
    assert [record["case"] for record in errors] == ["fuzz-" + json_path.stem]
    assert str(json_path) in errors[0]["detail"]
    assert "invalid JSON" in errors[0]["detail"]
    small = [record for record in records if record["group"] == "small"]
    assert small
    assert all(record["status"] == "pass" for record in small)


def test_regression_save_twice_lists_second_failure(tmp_path):
    json_path, npz_path = _saved_case(tmp_path)
    content = npz_path.read_bytes()
    inputs = {"chosen_rewards": np.array([0.5, -1.0]), "rejected_rewards": np.array([0.0, 2.0]), "margin": None}
    options = {"center_coefficient": 0.0, "reduction": "mean"}
    record = {"implementation": "other", "check": "grad:chosen_rewards", "status": "fail", "max_abs_error": 1.0, "max_rel_error_eps": 2.0, "tolerance": None, "detail": "also made up"}
    again = regression.save("bradley_terry_loss", inputs, options, "float32", record, backend="jax", seed=None, hypothesis_version="0", folder=tmp_path)
    assert again == json_path
    assert npz_path.read_bytes() == content
    document, _, _ = regression.load(json_path)
    assert document["implementation"] == "example"
    assert [entry["implementation"] for entry in document["also_failed"]] == ["other"]
    assert document["also_failed"][0]["backend"] == "jax"


def test_published_summary_names_the_run_of_each_loss(tmp_path):
    from conformance.fuzz import command

    path = tmp_path / "jax.json"
    first = {"format": command.SUMMARY_FORMAT, "backend": "jax", "mode": "eager", "losses": {"mse": {}, "gae": {}}}
    first["runs"] = [{"command": "lossparity fuzz --backend jax", "losses": ["gae", "mse"]}]
    command._write(path, first, merge=True)
    second = {"format": command.SUMMARY_FORMAT, "backend": "jax", "mode": "eager", "command": "lossparity fuzz", "losses": {"mse": {"examples": 2000}}}
    second["runs"] = [{"command": "lossparity fuzz --backend jax --loss mse", "losses": ["mse"]}]
    merged = json.loads(command._write(path, second, merge=True).read_text())
    assert merged["losses"]["mse"] == {"examples": 2000}
    assert "gae" in merged["losses"]
    assert [run["losses"] for run in merged["runs"]] == [["gae"], ["mse"]]
    assert merged["runs"][1]["command"].endswith("--loss mse")
    assert "command" not in merged
