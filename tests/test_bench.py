"""``lossparity bench``: the structure of its output on tiny shapes, its derived numbers and its fault isolation.

The smoke preset's times mean nothing, so nothing here checks a time against a
target: the tests check that every field is there, consistent and derived
correctly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conformance.bench import report
from conformance.bench.presets import LINEAR_REPEATS
from conformance.bench.measure import ResidentSetProbe
from tests.fault_backend import CRASH_EXIT_STATUS
from tests.test_cli import format_result, run_lossparity

SMOKE_LOSSES = "cross_entropy,bradley_terry_loss,linear_cross_entropy"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = run_lossparity("bench", "--preset", "smoke", "--loss", SMOKE_LOSSES, "--out", str(out), "--no-progress")
    document = json.loads((out / "perf.json").read_text()) if (out / "perf.json").exists() else None
    return result, out, document


def test_smoke_exit_status(smoke):
    result, _, _ = smoke
    assert result.returncode == 0, format_result(result)


def test_smoke_files(smoke):
    _, out, document = smoke
    assert document is not None, "perf.json was not written"
    for name in ("perf-time.png", "perf-memory.png"):
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE, f"{name} is not a PNG"
    text = (out / "perf.md").read_text()
    for heading in ("## Machine", "## Targets", "### Mirrors against natives", "## Every measurement", "perf-time.png"):
        assert heading in text, f"perf.md lacks {heading!r}"


def test_smoke_every_backend_measured(smoke):
    _, _, document = smoke
    assert set(document["backends"]) == {"torch", "jax", "tensorflow"}
    for backend in document["backends"]:
        measured = {(record["implementation"], record["mode"]) for record in document["records"] if record["backend"] == backend and record["status"] == "ok"}
        assert ("lossparity", "eager") in measured, f"{backend}: the mirror was not measured eagerly"
        assert ("lossparity", "compiled") in measured, f"{backend}: the mirror was not measured compiled"


def test_smoke_timings_consistent(smoke):
    _, _, document = smoke
    for record in document["records"]:
        if record["status"] != "ok":
            continue
        # Linear cross-entropy cases time forward plus backward only, with their own repeat count.
        linear = record["loss"] == "linear_cross_entropy"
        parts = ("forward_backward",) if linear else ("forward", "forward_backward")
        for part in parts:
            timing = record[part]
            expected_repeats = LINEAR_REPEATS.minimum if linear else 3
            assert timing["repeats"] == expected_repeats, f"{record['case']} {record['implementation']} {part}: {timing}"
            assert 0 < timing["p20_ms"] <= timing["median_ms"] <= timing["p80_ms"], f"{part} percentiles out of order: {timing}"
        for part in parts:
            assert record["first_call_seconds"][part] > 0
        if linear:
            assert "forward" not in record, "a linear cross-entropy case timed the forward pass alone"


def test_smoke_linear_rows(smoke):
    _, _, document = smoke
    rows = document["targets"]["linear"]
    assert {row["backend"] for row in rows} == {"torch", "jax", "tensorflow"}
    for row in rows:
        assert row["time_ratio"] == pytest.approx(row["mirror_ms"] / row["native_ms"], rel=0.1)
        assert row["floor_mib"] == pytest.approx((16 + 40) * 8 * 4 / 2**20, abs=0.1)


def test_smoke_memory_fields(smoke):
    _, _, document = smoke
    for record in document["records"]:
        if record["status"] != "ok":
            continue
        assert record["memory"]["forward_backward_bytes"] >= 0
        assert record["peak_bytes"] >= record["input_bytes"], "the peak with the inputs counted is below the inputs' size"
        if record["loss"] == "cross_entropy":
            assert record["logits_bytes"] == 8 * 50 * 4
            assert record["peak_to_logits"] == pytest.approx(record["peak_bytes"] / record["logits_bytes"], rel=1e-3)


def test_smoke_tensorflow_memory(smoke):
    _, _, document = smoke
    # TensorFlow's figures come from its allocator, whose peak includes the inputs.
    backend = document["backends"]["tensorflow"]
    assert backend["memory_counts_inputs"] is True
    assert "get_memory_info('CPU:0')" in backend["memory_method"]


def test_smoke_ratios_to_fastest(smoke):
    _, _, document = smoke
    by_case = {}
    for record in document["records"]:
        if record["status"] == "ok":
            by_case.setdefault(record["case"], []).append(record["ratio_to_fastest"]["forward_backward"])
    assert by_case, "no case was measured"
    for case, ratios in by_case.items():
        assert min(ratios) == 1.0, f"{case}: no implementation has ratio 1 to the fastest: {ratios}"


def test_smoke_unsupported_natives_recorded(smoke):
    _, _, document = smoke
    # optax.softmax_cross_entropy takes class probabilities, and the preset's targets are class indices.
    skipped = [
        record for record in document["records"]
        if record["implementation"] == "optax.softmax_cross_entropy" and record["status"] == "unsupported"
    ]
    assert skipped, "the probability-target native was not recorded as unsupported"
    assert "probabilities" in skipped[0]["detail"]


def test_smoke_mirror_against_native_rows(smoke):
    _, _, document = smoke
    rows = document["targets"]["mirror_vs_native"]
    assert {row["backend"] for row in rows} == {"torch", "jax", "tensorflow"}
    for row in rows:
        # The times are rounded to 0.001 ms, which moves the quotient of two 0.05 ms times by up to 4 %.
        assert row["ratio"] == pytest.approx(row["mirror_ms"] / row["native_ms"], rel=5e-2)


def _record(case, backend, implementation, kind, mode, forward_backward_ms, **extra):
    timing = {"median_ms": forward_backward_ms, "p20_ms": forward_backward_ms, "p80_ms": forward_backward_ms, "repeats": 5}
    return {
        "loss": "cross_entropy",
        "case": case,
        "backend": backend,
        "implementation": implementation,
        "kind": kind,
        "mode": mode,
        "status": "ok",
        "dims": {"N": 1024, "V": 128256},
        "dtype": "float32",
        "forward": timing,
        "forward_backward": timing,
        "input_bytes": 100,
        "logits_bytes": 1000,
        "min_bytes": 2000,
        "memory": {"forward_bytes": 0, "forward_backward_bytes": 2900},
        **extra,
    }


def test_annotate_derived_numbers():
    case = "cross_entropy N=1024 V=128256 float32 peaked"
    document = {
        "machine": {"bandwidth": {"best_gb_per_s": 1e-6}},  # 1000 bytes per second, for round numbers.
        "backends": {"torch": {"memory_counts_inputs": False}},
        "records": [
            _record(case, "torch", "lossparity", "mirror", "eager", 4000.0),
            _record(case, "torch", "lossparity", "mirror", "compiled", 3000.0),
            _record(case, "torch", "native-a", "native", "eager", 2000.0),
            _record(case, "torch", "native-b", "native", "compiled", 2500.0),
        ],
    }
    report.annotate(document)
    mirror_eager, mirror_compiled, native_a, _ = document["records"]

    assert mirror_eager["ratio_to_fastest"]["forward_backward"] == 2.0
    assert native_a["ratio_to_fastest"]["forward_backward"] == 1.0
    # 2000 minimal bytes in 3 s at 1000 B/s of bandwidth.
    assert mirror_compiled["efficiency"] == pytest.approx(2000 / 3 / 1000, rel=1e-3)
    # 2900 bytes during the call plus 100 bytes of inputs, over 1000 bytes of logits.
    assert mirror_eager["peak_to_logits"] == 3.0

    (row,) = document["targets"]["mirror_vs_native"]
    assert row["native"] == "native-a"
    assert row["mirror_mode"] == "compiled"
    assert row["ratio"] == 1.5
    assert row["meets_target"] is False

    (bandwidth,) = document["targets"]["bandwidth"]
    assert bandwidth["implementation"] == "native-a"
    assert bandwidth["efficiency"] == 1.0


def test_annotate_linear_rows():
    case = "linear_cross_entropy N=2048 H=1024 V=128256 float32 normal"
    dims = {"N": 2048, "H": 1024, "V": 128256}
    common = {"loss": "linear_cross_entropy", "dims": dims, "logits_bytes": None, "min_bytes": None, "gradient_bytes": 1000}
    document = {
        "machine": {"bandwidth": {"best_gb_per_s": 1.0}},
        "backends": {"jax": {"memory_counts_inputs": False}, "tensorflow": {"memory_counts_inputs": True}},
        "records": [
            _record(case, "jax", "lossparity", "mirror", "eager", 1200.0, **common, memory={"forward_backward_bytes": 1400}),
            _record(case, "jax", "unchunked", "native", "eager", 1000.0, **common, memory={"forward_backward_bytes": 7000}),
            # TensorFlow's reading includes the 100 input bytes.
            _record(case, "tensorflow", "lossparity", "mirror", "compiled", 2600.0, **common, memory={"forward_backward_bytes": 1100}),
            _record(case, "tensorflow", "unchunked", "native", "compiled", 2000.0, **common, memory={"forward_backward_bytes": 3100}),
        ],
    }
    report.annotate(document)

    assert document["targets"]["mirror_vs_native"] == []
    jax_row, tensorflow_row = document["targets"]["linear"]
    assert jax_row["time_ratio"] == 1.2
    assert jax_row["meets_time_target"] is True
    assert jax_row["memory_reduction"] == 5.0
    assert jax_row["meets_memory_target"] is True
    assert jax_row["peak_to_floor"] == 1.4
    assert jax_row["meets_floor_target"] is True
    assert tensorflow_row["time_ratio"] == 1.3
    assert tensorflow_row["meets_time_target"] is True
    # (3100 - 100) / (1100 - 100): the inputs are taken out of both peaks.
    assert tensorflow_row["memory_reduction"] == 3.0
    assert tensorflow_row["meets_memory_target"] is False
    assert tensorflow_row["peak_to_floor"] == 1.0
    table = "\n".join(report._linear_target_lines(document["targets"]["linear"]))
    assert "| n/a |" not in table
    assert "| 1.30 | yes |" in table
    assert "### Linear cross-entropy against the unchunked composition" in table


def test_annotate_linear_reduction_judged_at_target_shape_only():
    dims = {"N": 1024, "H": 2048, "V": 32000}
    common = {"loss": "linear_cross_entropy", "dims": dims, "logits_bytes": None, "min_bytes": None, "gradient_bytes": 1000}
    case = "linear_cross_entropy N=1024 H=2048 V=32000 float32 normal"
    document = {
        "machine": {"bandwidth": None},
        "backends": {"torch": {"memory_counts_inputs": False}},
        "records": [
            _record(case, "torch", "lossparity", "mirror", "eager", 1000.0, **common, memory={"forward_backward_bytes": 1100}),
            _record(case, "torch", "unchunked", "native", "eager", 1000.0, **common, memory={"forward_backward_bytes": 1500}),
        ],
    }
    report.annotate(document)

    (row,) = document["targets"]["linear"]
    assert row["memory_reduction"] == 1.364
    assert "meets_memory_target" not in row
    assert row["meets_floor_target"] is True
    assert "| n/a |" in "\n".join(report._linear_target_lines([row]))


def test_resident_set_probe_sees_allocation():
    probe = ResidentSetProbe()
    if probe.unavailable_reason():
        pytest.skip(probe.unavailable_reason())
    size = 64 * 2**20
    # np.ones writes every page, so all 64 MiB become resident during the call.
    seen = probe.measure(lambda: np.ones(size // 8), lambda output: None)
    assert seen >= size, f"the probe saw {seen} bytes of a {size}-byte allocation"


def test_bench_rejects_numpy():
    result = run_lossparity("bench", "--backend", "numpy", "--preset", "smoke", "--out", "/nonexistent-lossparity-out")
    assert result.returncode == 2, format_result(result)
    assert "numpy" in result.stderr
    assert "reference" in result.stderr


def test_bench_rejects_unknown_preset():
    result = run_lossparity("bench", "--preset", "huge", "--out", "/nonexistent-lossparity-out")
    assert result.returncode == 2, format_result(result)
    assert "'huge'" in result.stderr
    assert "cpu" in result.stderr


def test_bench_survives_crashing_backend(tmp_path):
    out = tmp_path / "faults"
    result = run_lossparity(
        "bench", "--preset", "smoke", "--backend", "faults,jax", "--loss", "bradley_terry_loss", "--out", str(out), "--no-progress",
        extra_backends="faults=tests.fault_backend",
    )
    assert result.returncode == 1, format_result(result)
    document = json.loads((out / "perf.json").read_text())
    faults = [record for record in document["records"] if record["backend"] == "faults"]
    crashes = [record for record in faults if record["status"] == "crash"]
    assert len(crashes) == 1, f"expected one crash record, got {faults}"
    assert crashes[0]["mode"] == "eager"
    assert f"status {CRASH_EXIT_STATUS}" in crashes[0]["detail"]
    compiled = [record for record in faults if record["mode"] == "compiled"]
    assert [record["status"] for record in compiled] == ["ok"], "the restarted worker did not measure the compiled unit"
    assert document["backends"]["faults"]["restarts"] == 1
    jax_statuses = {record["status"] for record in document["records"] if record["backend"] == "jax"}
    assert jax_statuses == {"ok"}, f"jax after the crashing backend: {jax_statuses}"
