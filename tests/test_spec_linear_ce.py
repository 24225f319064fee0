"""Spec tests of linear_cross_entropy: values from plain loops, gradients from central differences, bad input.

The expected values are computed with ``math`` on tiny inputs, one token and one
class at a time, from the formula in the docstring. The spec is never the
reference for its own value.
"""

import math

import numpy as np
import pytest

from conformance.cases import error_cases_for
from losses import SPECS, linear_cross_entropy, linear_cross_entropy_grad
from tests.finite_differences import central_difference

REL = 1e-12
GRAD_RTOL = 1e-6
# Central differences of an O(1) objective carry about 1e-16 / STEP = 1e-10 of
# rounding error, so entries near zero are compared with this absolute slack.
GRAD_ATOL = 1e-8
IGNORE = -100


def loop_loss(hidden, weight, bias, target, label_smoothing, z_loss):
    """One token's loss with math: logits by explicit dot products, then smoothed cross-entropy plus z-loss."""
    vocab_size = len(weight)
    logits = [sum(h * w for h, w in zip(hidden, row)) + (0.0 if bias is None else bias[k]) for k, row in enumerate(weight)]
    peak = max(logits)
    lse = peak + math.log(sum(math.exp(z - peak) for z in logits))
    log_probs = [z - lse for z in logits]
    smoothed = sum(log_probs) / vocab_size
    return -(1.0 - label_smoothing) * log_probs[target] - label_smoothing * smoothed + z_loss * lse * lse


def make_inputs(rng, tokens=5, hidden_size=3, vocab_size=4, with_bias=True, ignored=(1,)):
    targets = rng.integers(0, vocab_size, size=tokens)
    targets[list(ignored)] = IGNORE
    return {
        "hidden": rng.standard_normal((tokens, hidden_size)),
        "weight": rng.standard_normal((vocab_size, hidden_size)),
        "targets": targets,
        "bias": rng.standard_normal(vocab_size) if with_bias else None,
    }


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize(("label_smoothing", "z_loss"), [(0.0, 0.0), (0.2, 0.0), (0.0, 0.05), (0.1, 0.05)])
def test_value_matches_loop(reduction, label_smoothing, z_loss):
    inputs = make_inputs(np.random.default_rng(0))
    per_token = [
        0.0 if target == IGNORE else loop_loss(row, inputs["weight"], inputs["bias"], target, label_smoothing, z_loss)
        for row, target in zip(inputs["hidden"], inputs["targets"])
    ]
    counted = sum(1 for target in inputs["targets"] if target != IGNORE)
    expected = {"none": per_token, "sum": sum(per_token), "mean": sum(per_token) / counted}[reduction]

    value = linear_cross_entropy(**inputs, label_smoothing=label_smoothing, z_loss=z_loss, reduction=reduction)

    np.testing.assert_allclose(value, expected, rtol=REL, atol=REL)


def test_chunk_size_never_changes_value():
    inputs = make_inputs(np.random.default_rng(1), tokens=7)
    reference = linear_cross_entropy(**inputs, reduction="none")
    for chunk_size in (1, 3, 7, 100):
        assert np.array_equal(linear_cross_entropy(**inputs, reduction="none", chunk_size=chunk_size), reference)


def test_every_target_ignored_mean_is_zero():
    inputs = make_inputs(np.random.default_rng(2), ignored=range(5))
    assert float(linear_cross_entropy(**inputs)) == 0.0
    grads = linear_cross_entropy_grad(**inputs)
    for name, gradient in grads.items():
        assert not gradient.any(), name


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_ignored_nonfinite_hidden_changes_nothing(reduction):
    inputs = make_inputs(np.random.default_rng(7), tokens=6, ignored=(1, 4))
    clean = {**inputs, "hidden": inputs["hidden"].copy()}
    clean["hidden"][[1, 4]] = 0.0
    inputs["hidden"][1] = np.inf
    inputs["hidden"][4, 0] = np.nan

    value = linear_cross_entropy(**inputs, label_smoothing=0.1, reduction=reduction)
    grads = linear_cross_entropy_grad(**inputs, label_smoothing=0.1, reduction=reduction)
    clean_value = linear_cross_entropy(**clean, label_smoothing=0.1, reduction=reduction)
    clean_grads = linear_cross_entropy_grad(**clean, label_smoothing=0.1, reduction=reduction)

    np.testing.assert_array_equal(value, clean_value)
    for name in ("hidden", "weight", "bias"):
        assert np.isfinite(grads[name]).all(), name
        np.testing.assert_array_equal(grads[name], clean_grads[name], err_msg=name)
    assert not grads["hidden"][[1, 4]].any()


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize(
    ("with_bias", "options", "tokens_shape"),
    [
        (False, {}, (5,)),
        (True, {}, (5,)),
        (True, {"label_smoothing": 0.2, "z_loss": 0.05}, (5,)),
        (True, {"ignore_index": 3, "label_smoothing": 0.1}, (2, 3)),
    ],
    ids=["plain", "bias", "smoothing-z-loss", "rank3-custom-ignore"],
)
def test_grad_central_difference(reduction, with_bias, options, tokens_shape):
    rng = np.random.default_rng(3)
    tokens = int(np.prod(tokens_shape))
    inputs = make_inputs(rng, tokens=tokens, with_bias=with_bias)
    inputs["hidden"] = inputs["hidden"].reshape(tokens_shape + (3,))
    inputs["targets"] = np.where(inputs["targets"] == IGNORE, options.get("ignore_index", IGNORE), inputs["targets"]).reshape(tokens_shape)
    options = {**options, "reduction": reduction}
    spec = SPECS["linear_cross_entropy"]
    output_shape = np.shape(spec.function(**inputs, **options))
    cotangent = rng.uniform(0.5, 1.5, size=output_shape)

    analytic = spec.gradient(**inputs, **options, cotangent=cotangent)

    expected_keys = {"hidden", "weight"} | ({"bias"} if with_bias else set())
    assert set(analytic) == expected_keys
    for name in expected_keys:
        numeric = central_difference(spec.function, inputs, name, options, cotangent)
        assert analytic[name].shape == np.shape(inputs[name]), name
        np.testing.assert_allclose(analytic[name], numeric, rtol=GRAD_RTOL, atol=GRAD_ATOL, err_msg=name)


@pytest.mark.parametrize("error_case", error_cases_for("linear_cross_entropy"), ids=lambda case: case.name)
def test_error_cases(error_case):
    inputs, options = error_case.build()
    with pytest.raises(error_case.exception) as raised:
        linear_cross_entropy(**inputs, **options)
    for word in error_case.mentions:
        assert word in str(raised.value)


def test_weight_dtype_must_match_hidden():
    inputs = make_inputs(np.random.default_rng(4), with_bias=False)
    inputs["weight"] = inputs["weight"].astype(np.float32)
    with pytest.raises(TypeError, match="weight has dtype float32 but hidden has dtype float64"):
        linear_cross_entropy(**inputs)


def test_bias_dtype_must_match_hidden():
    inputs = make_inputs(np.random.default_rng(5))
    inputs["bias"] = inputs["bias"].astype(np.float32)
    with pytest.raises(TypeError, match="bias has dtype float32 but hidden has dtype float64"):
        linear_cross_entropy(**inputs)


def test_bool_chunk_size_rejected():
    inputs = make_inputs(np.random.default_rng(6))
    with pytest.raises(TypeError, match="chunk_size=True"):
        linear_cross_entropy(**inputs, chunk_size=True)
