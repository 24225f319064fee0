"""Tests of the 50-digit mpmath oracle and of the spec's agreement with it.

The expected values of the closed-form tests are worked out by hand (or with
mpmath in the test) from the loss catalog's formulas, not by the spec.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from mpmath import mp, mpf

import losses
from conformance.cases import Case
from conformance.oracle import BOUNDS, KNOWN_FINDINGS, run_oracle, worst_by_loss
from conformance.oracle.formulas import DIGITS, evaluate
from conformance.oracle.run import check_case, element_error, ulp64


def _case(name: str, inputs: dict, options: dict | None = None) -> Case:
    return Case(name, "small", lambda rng: (inputs, dict(options or {})))


def _value(loss: str, inputs: dict, options: dict | None = None, check: str = "value"):
    return evaluate(loss, inputs, options or {})[check].value


def _close(actual, expected, digits: int = 40) -> bool:
    """True when two mpf agree to `digits` significant digits (or both are exactly 0)."""
    with mp.workdps(DIGITS):
        expected = mpf(expected)
        if expected == 0:
            return abs(actual) < mpf(10) ** -digits
        return abs(actual - expected) <= abs(expected) * mpf(10) ** -digits


# Closed forms on tiny inputs ---------------------------------------------------------



def _hand_values():
    """(loss, inputs, options, expected value as an mpmath expression) for every spec loss."""
    with mp.workdps(DIGITS):
        ln = mp.log
        e = mp.e
        ln2 = mp.log(2)
        return [
            ("cross_entropy", {"logits": np.array([[1.0, 2.0, 3.0]]), "targets": np.array([1])}, {"reduction": "sum"}, ln(e + e**2 + e**3) - 2),
            ("cross_entropy", {"logits": np.zeros((2, 4)), "targets": np.array([0, -100])}, {}, ln(4)),
            ("linear_cross_entropy", {"hidden": np.zeros((1, 2)), "weight": np.ones((5, 2)), "targets": np.array([3])}, {}, ln(5)),
            ("causal_lm_cross_entropy", {"logits": np.zeros((1, 3, 4)), "labels": np.array([[0, 1, 2]])}, {}, ln(4)),
            ("kl_divergence", {"log_predictions": np.log(np.array([[0.25, 0.75]])), "targets": np.array([[0.5, 0.5]])}, {}, None),
            ("binary_cross_entropy_with_logits", {"logits": np.array([0.0, 0.0]), "targets": np.array([1.0, 0.0])}, {}, ln2),
            ("mse", {"predictions": np.array([1.0, 2.0]), "targets": np.array([0.0, 0.0])}, {}, mpf("2.5")),
            # T = 2 frames, uniform over {blank, 1}, target "1": the paths 11, b1 and 1b have probability 3/4.
            ("ctc_loss", {"logits": np.zeros((1, 2, 2)), "targets": np.array([[1]]), "input_lengths": np.array([2]), "target_lengths": np.array([1])}, {"reduction": "sum"}, -ln(mpf(3) / 4)),
            # Target "1 1" needs a blank between the repeats: in 3 frames only 1b1, probability 1/8.
            ("ctc_loss", {"logits": np.zeros((1, 3, 2)), "targets": np.array([[1, 1]]), "input_lengths": np.array([3]), "target_lengths": np.array([2])}, {"reduction": "sum"}, 3 * ln2),
            ("sequence_logps", {"token_logps": np.array([[-1.0, -2.0, np.nan]]), "mask": np.array([[True, True, False]])}, {"average": True}, mpf("-1.5")),
            ("dpo_loss", {"policy_chosen_logps": np.array([-3.0]), "policy_rejected_logps": np.array([-5.0]), "reference_chosen_logps": np.array([-3.0]), "reference_rejected_logps": np.array([-5.0])}, {"label_smoothing": 0.2}, ln2),
            ("dpo_loss", {"policy_chosen_logps": np.array([-1.0]), "policy_rejected_logps": np.array([-2.0]), "reference_chosen_logps": np.array([-1.0]), "reference_rejected_logps": np.array([-1.0])}, {"loss_type": "ipo", "beta": 0.5}, mpf(0)),
            ("simpo_loss", {"policy_chosen_logps": np.array([-1.0]), "policy_rejected_logps": np.array([-1.25])}, {}, ln2),
            # a_c = ln 1/2 has odds 1, a_r = ln 1/4 has odds 1/3: D = ln 3 and sp(-D) = ln 4/3.
            ("orpo_loss", {"chosen_avg_logps": np.array([math.log(0.5)]), "rejected_avg_logps": np.array([math.log(0.25)]), "chosen_nll": np.array([2.0])}, {"lam": 1.0}, None),
            ("kto_loss", {"policy_logps": np.array([-2.0, -2.0]), "reference_logps": np.array([-2.5, -2.5]), "desirable": np.array([True, False]), "kl_estimate": np.array(0.5)}, {"undesirable_weight": 3.0}, mpf(1)),
            ("ppo_policy_loss", {"logps": np.array([[-1.0]]), "old_logps": np.array([[-1.0]]), "advantages": np.array([[2.0]]), "mask": np.array([[True]])}, {}, mpf(-2)),
            ("value_loss", {"values": np.array([1.0]), "old_values": np.array([0.0]), "returns": np.array([0.0]), "mask": np.array([True])}, {}, mpf("0.5")),
            ("kl_penalty", {"logps": np.array([math.log(2.0)]), "ref_logps": np.array([0.0])}, {"estimator": "k3"}, None),
            ("entropy_from_logits", {"logits": np.zeros((1, 4)), "mask": np.array([True])}, {}, ln(4)),
            ("ranking_loss", {"rewards": np.array([[1.0, 1.0, 1.0]])}, {}, ln2),
            ("ranking_loss_pooled", {"rewards": np.array([[2.0, 1.0], [0.0, 0.0]])}, {}, (ln(1 + mp.exp(-1)) + ln2) / 2),
            ("plackett_luce_loss", {"scores": np.array([[0.0, 0.0, 0.0]])}, {}, ln(3) + ln2),
            ("sequence_alignment_loss", {"scores": np.zeros((2, 3)), "alignment": np.array([0, 2])}, {}, 2 * ln(3)),
            ("bradley_terry_loss", {"chosen_rewards": np.array([1.5]), "rejected_rewards": np.array([0.5]), "margin": np.array([1.0])}, {}, ln2),
        ]


def _expected(loss, value, inputs):
    """The closed forms that need a few lines: KL, ORPO and k3."""
    with mp.workdps(DIGITS):
        if loss == "kl_divergence":
            # log q contains float64 roundings of ln 1/4 and ln 3/4: use those exact doubles.
            log_q = [mpf(float(v)) for v in inputs["log_predictions"][0]]
            assert abs(log_q[0] - mp.log(mpf(1) / 4)) < 1e-15
            return mpf("0.5") * (mp.log(mpf("0.5")) - log_q[0]) + mpf("0.5") * (mp.log(mpf("0.5")) - log_q[1])
        if loss == "orpo_loss":
            # The inputs are float64 roundings of ln 1/2 and ln 1/4: take their odds from the exact doubles.
            a_c, a_r = (mpf(float(inputs[name][0])) for name in ("chosen_avg_logps", "rejected_avg_logps"))
            odds = (a_c - mp.log(1 - mp.exp(a_c))) - (a_r - mp.log(1 - mp.exp(a_r)))
            assert abs(odds - mp.log(3)) < 1e-15
            return 2 + mp.log(1 + mp.exp(-odds))
        if loss == "kl_penalty":
            delta = mpf(float(inputs["logps"][0]))
            assert abs(delta - mp.log(2)) < 1e-15
            return mp.exp(-delta) - 1 + delta
        return value


HAND_VALUES = _hand_values()


@pytest.mark.parametrize("loss, inputs, options, expected", HAND_VALUES, ids=[f"{entry[0]}-{n}" for n, entry in enumerate(HAND_VALUES)])
def test_oracle_value_matches_closed_form(loss, inputs, options, expected):
    expected = _expected(loss, expected, inputs)
    with mp.workdps(DIGITS):
        actual = _value(loss, inputs, options).ravel()[0]
        assert _close(actual, expected), f"{loss}: oracle {actual}, closed form {expected}"


def test_hand_values_cover_every_loss():
    covered = {entry[0] for entry in HAND_VALUES} | {"gae", "grpo_advantages"}
    assert covered == set(losses.SPECS)


def test_gae_matches_hand_scan():
    # gamma = lam = 1: delta_1 = 2 - 0.25 = 1.75, delta_0 = 1 + 0.25 - 0.5 = 0.75, A = (2.5, 1.75), R = A + V.
    inputs = {"rewards": np.array([[1.0, 2.0]]), "values": np.array([[0.5, 0.25]]), "mask": np.array([[True, True]])}
    oracle = evaluate("gae", inputs, {"gamma": 1.0, "lam": 1.0})
    assert [float(v) for v in oracle["value:advantages"].value[0]] == [2.5, 1.75]
    assert [float(v) for v in oracle["value:returns"].value[0]] == [3.0, 2.0]


def test_gae_skips_masked_gap():
    # The masked middle token is not a time step: A_0 = r_0 + V_2 - V_0 + A_2 with A_2 = r_2 - V_2.
    inputs = {"rewards": np.array([[1.0, 7.0, 2.0]]), "values": np.array([[0.5, 9.0, 0.25]]), "mask": np.array([[True, False, True]])}
    advantages = evaluate("gae", inputs, {"gamma": 1.0, "lam": 1.0})["value:advantages"].value[0]
    assert [float(v) for v in advantages] == [2.5, 0.0, 1.75]


def test_grpo_matches_hand_standardisation():
    # Rewards 1, 2, 3: mean 2, sample std 1, so with eps = 0 the advantages are -1, 0, 1.
    inputs = {"rewards": np.array([1.0, 2.0, 3.0, 5.0]), "group_ids": np.array([0, 0, 0, 1])}
    advantages = evaluate("grpo_advantages", inputs, {"eps": 0.0})["value"].value
    assert [float(v) for v in advantages] == [-1.0, 0.0, 1.0, 0.0]


def test_oracle_gradients_match_closed_forms():
    with mp.workdps(DIGITS):
        # Uniform logits over 4 classes, target 0, sum: d/dz = p - onehot = (1/4 - 1, 1/4, 1/4, 1/4).
        grad = evaluate("cross_entropy", {"logits": np.zeros((1, 4)), "targets": np.array([0])}, {"reduction": "sum"})["grad:logits"].value
        assert [float(v) for v in grad[0]] == [-0.75, 0.25, 0.25, 0.25]
        # BCE at x = 0, y = 1: d/dx = -sigma(0) = -1/2.
        grad = evaluate("binary_cross_entropy_with_logits", {"logits": np.array([0.0]), "targets": np.array([1.0])}, {"reduction": "sum"})["grad:logits"].value
        assert float(grad[0]) == -0.5
        # CTC with one frame and target "1": the posterior of class 1 is 1, so d/dz = p - (0, 1) = (1/2, -1/2).
        inputs = {"logits": np.zeros((1, 1, 2)), "targets": np.array([[1]]), "input_lengths": np.array([1]), "target_lengths": np.array([1])}
        grad = evaluate("ctc_loss", inputs, {"reduction": "sum"})["grad:logits"].value
        assert [float(v) for v in grad[0, 0]] == [0.5, -0.5]
        # Entropy of a uniform row is stationary: every derivative is 0.
        grad = evaluate("entropy_from_logits", {"logits": np.zeros((1, 4)), "mask": np.array([True])}, {})["grad:logits"].value
        assert all(v == 0 for v in grad.ravel())
        # Bradley-Terry at d = 0: d/dr_c = -sigma(0) = -1/2.
        grad = evaluate("bradley_terry_loss", {"chosen_rewards": np.array([1.0]), "rejected_rewards": np.array([1.0])}, {"reduction": "sum"})["grad:chosen_rewards"].value
        assert float(grad[0]) == -0.5


def test_infeasible_ctc_target_is_infinite():
    # "1 1" needs 3 frames; in 2 there is no alignment, so the loss is +inf and its gradient undefined.
    inputs = {"logits": np.zeros((1, 2, 2)), "targets": np.array([[1, 1]]), "input_lengths": np.array([2]), "target_lengths": np.array([2])}
    oracle = evaluate("ctc_loss", inputs, {"reduction": "none"})
    assert oracle["value"].value[0] == mp.inf
    assert all(mp.isnan(v) for v in oracle["grad:logits"].value.ravel())


# The error measure ---------------------------------------------------------------------


def test_ulp64_matches_float64_spacing():
    assert ulp64(mpf(1)) == mpf(2) ** -52
    assert ulp64(mpf("1.5")) == mpf(2) ** -52
    assert ulp64(mpf(0)) == mpf(2) ** -1074
    assert ulp64(mpf("1e-320")) == mpf(2) ** -1074
    assert ulp64(mpf(1024)) == mpf(2) ** -42


def test_element_error_counts_ulps():
    with mp.workdps(DIGITS):
        one_third = mpf(1) / 3
        nearest = float(one_third)
        assert element_error(nearest, one_third, None) <= 0.5
        assert 2.4 < element_error(nearest + 3 * math.ulp(nearest), one_third, None) < 3.6
        assert element_error(float("nan"), mpf("nan"), None) == 0.0
        assert element_error(1.0, mpf("nan"), None) == math.inf
        assert element_error(math.inf, mpf("1e400"), None) == 0.0
        # A tiny result is measured against the magnitude of the terms that cancelled to it.
        assert element_error(1e-17, mpf(0), mpf(1)) < 0.1
        assert element_error(1e-17, mpf(0), None) > 1e300


# The oracle catches a wrong spec ------------------------------------------------------------


def _naive_bce(logits, targets, *, weight=None, pos_weight=None, reduction="mean"):
    """BCE with softplus written log(1 + exp(x)), which returns 0 for sp(-40) = 4.2e-18."""
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    with np.errstate(over="ignore"):
        per_element = y * np.log(1.0 + np.exp(-x)) + (1.0 - y) * np.log(1.0 + np.exp(x))
    if reduction == "none":
        return per_element
    if reduction == "sum":
        return np.asarray(per_element.sum())
    return np.asarray(per_element.mean())


def test_oracle_catches_naive_softplus(monkeypatch):
    spec = losses.SPECS["binary_cross_entropy_with_logits"]
    case = _case("softplus-at-40", {"logits": np.array([40.0, -3.0, 0.5]), "targets": np.array([1.0, 1.0, 0.0])}, {"reduction": "none"})

    honest = {record["check"]: record for record in check_case(spec.name, case)}
    assert honest["value"]["status"] == "pass"

    monkeypatch.setitem(losses.SPECS, spec.name, dataclasses.replace(spec, function=_naive_bce))
    naive = {record["check"]: record for record in check_case(spec.name, case)}
    assert naive["value"]["status"] == "fail"
    assert naive["value"]["ulp"] > 1e12
    assert naive["value"]["detail"]["index"] == [0]


def _perturbed(function, shift: float):
    """Wrap a spec function so its result is off by `shift`."""

    def perturbed(*args, **kwargs):
        return np.asarray(function(*args, **kwargs), dtype=np.float64) + shift

    return perturbed


def _value_ulp(loss: str, case) -> float:
    """One ULP of the oracle's magnitude of a case's (0-d) value: the unit the error is measured in."""
    inputs, options = case.generate(0)
    output = evaluate(loss, inputs, options)["value"]
    with mp.workdps(DIGITS):
        return float(ulp64(max(abs(output.value[()]), output.magnitude[()])))


def _value_record(loss: str, case) -> dict:
    return next(record for record in check_case(loss, case, gradients=False) if record["check"] == "value")


@pytest.mark.parametrize("loss", ["cross_entropy", "dpo_loss", "ctc_loss", "plackett_luce_loss"])
def test_oracle_catches_perturbation_beyond_bound(monkeypatch, loss):
    from conformance.cases import cases_for

    spec = losses.SPECS[loss]
    case = next(case for case in cases_for(loss) if case.group == "small")
    bound = BOUNDS[loss]

    # A shift of 2 * bound ULPs fails whatever the honest spec's own error of a few ULPs.
    monkeypatch.setitem(losses.SPECS, loss, dataclasses.replace(spec, function=_perturbed(spec.function, 2 * bound * _value_ulp(loss, case))))
    perturbed = _value_record(loss, case)
    assert perturbed["status"] == "fail"
    assert 2 * bound - 4 <= perturbed["ulp"] <= 2 * bound + 4

    monkeypatch.setitem(losses.SPECS, loss, dataclasses.replace(spec, function=_perturbed(spec.function, 0)))
    assert _value_record(loss, case)["status"] == "pass"


def test_perturbation_measured_in_ulps(monkeypatch):
    # An MSE's magnitude is its value, so a result moved by k ULPs measures k ULPs, give or take the spec's own error.
    spec = losses.SPECS["mse"]
    case = _case("ulps", {"predictions": np.array([0.1, 0.7]), "targets": np.array([0.3, -0.2])}, {"reduction": "mean"})
    unit = _value_ulp("mse", case)
    for ulps in (3, 20, 1000):
        monkeypatch.setitem(losses.SPECS, "mse", dataclasses.replace(spec, function=_perturbed(spec.function, ulps * unit)))
        assert ulps - 1.5 <= _value_record("mse", case)["ulp"] <= ulps + 1.5


def test_oracle_catches_wrong_gradient(monkeypatch):
    spec = losses.SPECS["bradley_terry_loss"]

    def gradient_without_centring(*args, **kwargs):
        kwargs = dict(kwargs, center_coefficient=0.0)
        return spec.gradient(*args, **kwargs)

    case = _case("centred", {"chosen_rewards": np.array([1.0, -0.5]), "rejected_rewards": np.array([0.25, 0.75])}, {"center_coefficient": 0.01})
    monkeypatch.setitem(losses.SPECS, spec.name, dataclasses.replace(spec, gradient=gradient_without_centring))
    failed = {record["check"] for record in check_case(spec.name, case) if record["status"] == "fail"}
    assert failed == {"grad:chosen_rewards", "grad:rejected_rewards"}


# The spec against the oracle on the cases -------------------------------------------------


@pytest.fixture(scope="module")
def oracle_records():
    return run_oracle()


def _key(record: dict) -> tuple[str, str, str]:
    return record["loss"], record["case"], record["check"]


def test_spec_within_bounds_on_cases(oracle_records):
    failures = [
        f"{r['loss']} / {r['case']} / {r['check']}: {r['ulp']:.3g} ULP > {r['bound']}; {r['detail']}"
        for r in oracle_records
        if r["status"] != "pass" and _key(r) not in KNOWN_FINDINGS
    ]
    assert not failures, "\n".join(failures)


def test_known_findings_still_fail(oracle_records):
    # When the spec is fixed, the record passes and its entry in KNOWN_FINDINGS must go.
    by_key = {_key(r): r for r in oracle_records}
    for key, cause in KNOWN_FINDINGS.items():
        assert key in by_key, f"{key} was not checked"
        assert by_key[key]["status"] == "fail", f"{key} now passes: remove it from KNOWN_FINDINGS ({cause})"
        assert by_key[key]["detail"]["finding"] == cause


def test_every_loss_and_gradient_checked(oracle_records):
    checks = {(r["loss"], r["check"]) for r in oracle_records}
    for name, spec in losses.SPECS.items():
        values = [f"value:{output}" for output in spec.outputs] or ["value"]
        for check in values:
            assert (name, check) in checks, f"{name}: no {check} record"
        for argument in spec.differentiable:
            assert (name, f"grad:{argument}") in checks, f"{name}: no gradient record for {argument}"


def test_records_compare_elements(oracle_records):
    assert sum(r["elements"] for r in oracle_records) > 10_000
    for name in losses.SPECS:
        assert sum(r["elements"] for r in oracle_records if r["loss"] == name and r["check"].startswith("value")) > 0, name


def test_worst_by_loss_summarises(oracle_records):
    summary = worst_by_loss(oracle_records)
    assert set(summary) == set(losses.SPECS)
    for name, entry in summary.items():
        mine = [r for r in oracle_records if r["loss"] == name]
        assert entry["ulp"] == max(r["ulp"] for r in mine)
        assert entry["cases"] == len({r["case"] for r in mine})
        assert entry["bound"] == BOUNDS[name]


def test_command_line_writes_table_and_json(tmp_path, capsys):
    import json

    from conformance.oracle.__main__ import main

    path = tmp_path / "oracle.json"
    status = main(["--loss", "mse", "--loss", "kl_penalty", "--json", str(path), "--quiet"])
    output = capsys.readouterr().out

    assert status == 0
    assert "| mse |" in output
    assert "| kl_penalty |" in output
    payload = json.loads(path.read_text())
    assert set(payload["summary"]) == {"mse", "kl_penalty"}
    assert all(record["status"] == "pass" for record in payload["records"])
    assert payload["summary"]["mse"]["reason"]
