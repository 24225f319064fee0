"""Cases for dpo_loss: every loss_type, label smoothing, reference-free, reductions, ties, the hinge kink.

The two compiled cases cover robust smoothing (both log-sigmoid terms and the
1 / (1 - 2 eps) factor) with reduction "none", and the hinge with
reference_free and reduction "mean". The ipo and the plain sigmoid forms run
eager only.
"""

from __future__ import annotations

import numpy as np

from . import Case, ErrorCase
from ._nonfinite import PROPAGATE, build_of, nonfinite_cases

NAMES = ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps")


def _log_probs(rng, size, *, average):
    """Reference and policy log-probs of chosen and rejected completions, in the order of NAMES.

    Summed log-probs come from completions of 150 to 400 tokens at about -1 per
    token, so they lie near -300. The policy differs from the reference by a
    few nats per sequence, as after some DPO steps. Token-averaged log-probs
    are near -1 and differ by a few hundredths.
    """
    if average:
        reference = -rng.uniform(0.4, 2.0, size=(2, *size))
        policy = reference + rng.normal(0.0, 0.05, size=(2, *size))
    else:
        reference = -rng.uniform(150, 400, size=(2, *size)) * rng.uniform(0.8, 1.2, size=(2, *size))
        policy = reference + rng.normal(0.0, 4.0, size=(2, *size))
    return {
        "policy_chosen_logps": policy[0],
        "policy_rejected_logps": policy[1],
        "reference_chosen_logps": reference[0],
        "reference_rejected_logps": reference[1],
    }


def _pairs(name, *, size=(8,), average=False, group="small", compiled=False, **options):
    def build(rng):
        return _log_probs(rng, size, average=average), options

    return Case(name, group, build, compiled=compiled)


def _fixed(name, columns, group="edge", dtypes=None, note="", **options):
    """Build a case from fixed rows of (policy_c, policy_r, reference_c, reference_r)."""
    values = np.array(columns, dtype=np.float64).reshape(-1, 4)

    def build(rng):
        return {argument: values[:, index].copy() for index, argument in enumerate(NAMES)}, options

    return Case(name, group, build, dtypes=dtypes, note=note)


def _policy_equals_reference(rng):
    inputs = _log_probs(rng, (16,), average=False)
    inputs["policy_chosen_logps"] = inputs["reference_chosen_logps"].copy()
    inputs["policy_rejected_logps"] = inputs["reference_rejected_logps"].copy()
    return inputs, {"label_smoothing": 0.2, "reduction": "none"}


def _empty(rng):
    return {name: np.zeros(0) for name in NAMES}, {"reduction": "mean"}


# Rows with |h| = 10240 = 1.25 * 2^13, exact in bfloat16 and float16, in both
# directions, plus a tie. Each log-prob is a multiple of 2048 below 2^14, so
# bfloat16 and float16 hold every input exactly.
HUGE = [
    (-2048.0, -12288.0, -2048.0, -2048.0),
    (-12288.0, -2048.0, -2048.0, -2048.0),
    (-4096.0, -4096.0, -14336.0, -4096.0),
    (-4096.0, -4096.0, -4096.0, -14336.0),
    (-6144.0, -6144.0, -6144.0, -6144.0),
]

# With beta = 0.5, rows 0 and 1 have h = 2 exactly, so beta h = 1 is the hinge
# kink in every dtype. Rows 2 and 3 lie on either side of it.
KINK = [
    (-10.0, -20.0, -13.0, -21.0),
    (-4.0, -8.0, -6.0, -8.0),
    (-10.0, -20.0, -14.0, -21.0),
    (-10.0, -20.0, -12.0, -21.0),
]

CASES = [
    _pairs("sigmoid-mean"),
    _pairs("sigmoid-sum", reduction="sum"),
    _pairs("sigmoid-none", reduction="none"),
    _pairs("cdpo-smoothing-0.1-mean", label_smoothing=0.1),
    _pairs("cdpo-smoothing-0.45-none", label_smoothing=0.45, reduction="none"),
    _pairs("robust-no-smoothing-mean", loss_type="robust"),
    _pairs("robust-smoothing-0.2-none", loss_type="robust", label_smoothing=0.2, reduction="none", compiled=True),
    _pairs("robust-smoothing-0.4-sum", loss_type="robust", label_smoothing=0.4, reduction="sum"),
    _pairs("ipo-summed-mean", loss_type="ipo"),
    _pairs("ipo-averaged-none", loss_type="ipo", average=True, reduction="none"),
    _pairs("ipo-beta-0.5-sum", loss_type="ipo", beta=0.5, reduction="sum"),
    _pairs("hinge-mean", loss_type="hinge"),
    _pairs("hinge-none", loss_type="hinge", beta=0.5, reduction="none"),
    _pairs("reference-free-sigmoid-none", reference_free=True, average=True, beta=2.0, reduction="none"),
    _pairs("hinge-reference-free-mean", loss_type="hinge", reference_free=True, average=True, beta=2.0, compiled=True),
    _pairs("reference-free-ipo-mean", loss_type="ipo", reference_free=True, average=True),
    _pairs("sigmoid-beta-1-grid-4x2-none", size=(4, 2), beta=1.0, reduction="none"),
    _pairs("sigmoid-512-pairs-summed", size=(512,), group="realistic"),
    _pairs("cdpo-128-pairs-summed", size=(128,), label_smoothing=0.1, reduction="sum", group="realistic"),
    _pairs("robust-256-pairs-summed", size=(256,), loss_type="robust", label_smoothing=0.1, group="realistic"),
    _pairs("ipo-256-pairs-averaged", size=(256,), loss_type="ipo", average=True, group="realistic"),
    _pairs("hinge-64-pairs-summed", size=(64,), loss_type="hinge", reduction="none", group="realistic"),
    Case("policy-equals-reference", "edge", _policy_equals_reference),
    _fixed("differences-1e4-cdpo", HUGE, label_smoothing=0.1, reduction="none"),
    _fixed("differences-1e4-robust", HUGE, loss_type="robust", label_smoothing=0.2, reduction="none"),
    _fixed("differences-1e4-hinge", HUGE, loss_type="hinge", reduction="sum"),
    _fixed(
        "differences-1e4-ipo",
        HUGE,
        loss_type="ipo",
        reduction="none",
        dtypes=("float64", "float32", "bfloat16"),
        note="(h - 1 / (2 beta))^2 is about 1e8 here, above float16's maximum of 65504",
    ),
    _fixed("hinge-kink", KINK, loss_type="hinge", beta=0.5, reduction="none"),
    Case("empty-batch-mean", "edge", _empty),
]


def _bad(**overrides):
    options = {key: overrides.pop(key) for key in list(overrides) if key not in NAMES}

    def build():
        inputs = {name: np.full(4, -10.0) for name in NAMES}
        inputs.update(overrides)
        return inputs, options

    return build


ERROR_CASES = [
    ErrorCase("policy-mismatched-batch", _bad(policy_rejected_logps=np.zeros(5)), ValueError, ("policy_rejected_logps", "(5,)", "(4,)")),
    ErrorCase("reference-mismatched-batch", _bad(reference_rejected_logps=np.zeros(3)), ValueError, ("reference_rejected_logps", "(3,)")),
    ErrorCase("reference-free-still-checks-shape", _bad(reference_chosen_logps=np.zeros((4, 1)), reference_free=True), ValueError, ("reference_chosen_logps", "(4, 1)")),
    ErrorCase("integer-logps", _bad(policy_chosen_logps=np.zeros(4, dtype=np.int64)), TypeError, ("policy_chosen_logps", "int64")),
    ErrorCase("beta-zero", _bad(beta=0.0), ValueError, ("beta", "0.0", "> 0")),
    ErrorCase("beta-negative", _bad(beta=-0.1), ValueError, ("beta", "-0.1")),
    ErrorCase("smoothing-half-robust", _bad(loss_type="robust", label_smoothing=0.5), ValueError, ("label_smoothing", "0.5")),
    ErrorCase("smoothing-half-sigmoid", _bad(label_smoothing=0.5), ValueError, ("label_smoothing", "0.5")),
    ErrorCase("smoothing-negative", _bad(label_smoothing=-0.1), ValueError, ("label_smoothing", "-0.1")),
    ErrorCase("smoothing-with-ipo", _bad(loss_type="ipo", label_smoothing=0.1), ValueError, ("label_smoothing", "ipo")),
    ErrorCase("smoothing-with-hinge", _bad(loss_type="hinge", label_smoothing=0.1), ValueError, ("label_smoothing", "hinge")),
    ErrorCase("unknown-loss-type", _bad(loss_type="kto_pair"), ValueError, ("loss_type", "kto_pair")),
    ErrorCase("unknown-reduction", _bad(reduction="batchmean"), ValueError, ("reduction", "batchmean")),
    ErrorCase("reference-free-not-bool", _bad(reference_free=1), TypeError, ("reference_free", "bool")),
]

# Log-probabilities enter only through h = rho_c - rho_r, so NaN propagates and inf gives the limit of each loss type.
NONFINITE_POLICY = {name: PROPAGATE for name in NAMES}
CASES += nonfinite_cases(NONFINITE_POLICY, build_of(CASES, "sigmoid-mean"))

ERROR_CASES += [
    ErrorCase(f"integer-{name}", _bad(**{name: np.zeros(4, dtype=np.int64)}), TypeError, (name, "int64", "floating-point"))
    for name in NAMES
    if name != "policy_chosen_logps"
]
