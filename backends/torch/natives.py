"""Adapters that call PyTorch's built-in losses with the spec's signature."""

from __future__ import annotations

import numpy as np
import torch

from conformance.dtypes import round_to

from .._api import half_precision_differences, Difference, Implementation, uses_any


def _zero_denominator_mean(inputs, options, dtype) -> bool:
    """True when a mean cross-entropy divides by zero: no counted rows or zero weight on all of them."""
    if options.get("reduction", "mean") != "mean":
        return False
    logits, targets = inputs["logits"], inputs["targets"]
    if targets.dtype.kind == "f":
        return int(np.prod(logits.shape[:-1])) == 0
    counted = targets != options.get("ignore_index", -100)
    weight = inputs.get("weight")
    if weight is None:
        return not counted.any()
    return float(weight[targets[counted]].sum()) == 0.0


def _ignored_rows_not_finite(inputs, options, dtype) -> bool:
    targets = inputs["targets"]
    if targets.dtype.kind == "f":
        return False
    ignored = targets == options.get("ignore_index", -100)
    return bool(ignored.any()) and not np.isfinite(inputs["logits"][ignored]).all()


def cross_entropy_native(logits, targets, *, weight=None, ignore_index=-100, label_smoothing=0.0, z_loss=0.0, reduction="mean"):
    # PyTorch wants the class axis at position 1: (N, C, d1, ...). A single row (C,) is accepted as is.
    if logits.ndim >= 2:
        logits = logits.movedim(-1, 1)
        if targets.is_floating_point():
            targets = targets.movedim(-1, 1)
    if weight is not None:
        weight = weight.detach().to(logits.dtype)
    if targets.is_floating_point():
        # The spec reads ignore_index only for class targets; PyTorch raises on any value but its default with probabilities.
        ignore_index = -100
    # With reduction="none" the result is (N, d1, ...), which is already logits.shape[:-1] of the spec layout.
    return torch.nn.functional.cross_entropy(
        logits, targets, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction
    )


def mse_native(predictions, targets, *, reduction="mean"):
    return torch.nn.functional.mse_loss(predictions, targets, reduction=reduction)


def _mean_of_empty(inputs, options, dtype) -> bool:
    return options.get("reduction", "mean") == "mean" and inputs["predictions"].size == 0


HALF_PRECISION = {name: half_precision_differences(name) for name in (
    "torch.nn.functional.cross_entropy",
    "torch.nn.functional.mse_loss",
    "torch.nn.functional.linear+cross_entropy",
    "torch.nn.functional.binary_cross_entropy_with_logits",
)}


NATIVES = (
    Implementation(
        loss="cross_entropy",
        name="torch.nn.functional.cross_entropy",
        kind="native",
        function=cross_entropy_native,
        unsupported=lambda inputs, options: uses_any(inputs, options, options_set=("z_loss",)),
        differences=(
            Difference(
                "mean-of-nothing-is-nan",
                "PyTorch divides by a zero total weight and returns NaN when every target is ignored, "
                "the batch is empty or every counted target has weight 0; the spec returns 0.",
                _zero_denominator_mean,
            ),
            Difference(
                "nonfinite-logits-in-ignored-rows",
                "PyTorch computes log_softmax over ignored rows too, so -inf or NaN logits there can reach "
                "the gradient; the spec ignores those rows completely.",
                _ignored_rows_not_finite,
            ),
        ) + HALF_PRECISION["torch.nn.functional.cross_entropy"],
        notes="class axis moved from last to 1; weight detached; no z_loss option",
    ),
    Implementation(
        loss="mse",
        name="torch.nn.functional.mse_loss",
        kind="native",
        function=mse_native,
        differences=(
            Difference(
                "mean-of-empty-is-nan",
                "PyTorch returns NaN for the mean of an empty input; the spec returns 0.",
                _mean_of_empty,
            ),
        ) + HALF_PRECISION["torch.nn.functional.mse_loss"],
        notes="called as is; PyTorch broadcasts mismatched shapes with a warning, the spec raises",
    ),
)


def _linear_zero_denominator_mean(inputs, options, dtype) -> bool:
    """True when a mean linear cross-entropy has no counted token: every target ignored, or no tokens."""
    # The targets are class ids, so the cross-entropy predicate reads only them and never uses hidden as logits.
    return _zero_denominator_mean({"logits": inputs["hidden"], "targets": inputs["targets"]}, options, dtype)


def _linear_ignored_rows_not_finite(inputs, options, dtype) -> bool:
    """True when an ignored token's logits hidden @ weight.T + bias contain inf or NaN in the tested dtype.

    The product is formed in float64 and rounded to dtype, so logits that
    overflow only in the narrower dtype (float32 at 3.4e38, float16 at 65504) count.
    """
    ignored = inputs["targets"] == options.get("ignore_index", -100)
    if not ignored.any():
        return False
    with np.errstate(over="ignore", invalid="ignore"):
        logits = inputs["hidden"][ignored] @ inputs["weight"].T
        if inputs.get("bias") is not None:
            logits = logits + inputs["bias"]
        logits = round_to(logits, dtype)
    return not np.isfinite(logits).all()


def linear_cross_entropy_native(
    hidden, weight, targets, *, bias=None, ignore_index=-100, label_smoothing=0.0, z_loss=0.0, reduction="mean", chunk_size=None
):
    # chunk_size only sets the mirrors' memory use: the built-ins form all (..., V) logits at once.
    logits = torch.nn.functional.linear(hidden, weight, bias)
    return cross_entropy_native(logits, targets, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction)


NATIVES += (
    Implementation(
        loss="linear_cross_entropy",
        name="torch.nn.functional.linear+cross_entropy",
        kind="native",
        function=linear_cross_entropy_native,
        unsupported=lambda inputs, options: uses_any(inputs, options, options_set=("z_loss",)),
        differences=(
            Difference(
                "mean-of-nothing-is-nan",
                "PyTorch divides by zero counted targets and returns NaN when every target is ignored "
                "or the batch is empty; the spec returns 0.",
                _linear_zero_denominator_mean,
            ),
            Difference(
                "nonfinite-logits-in-ignored-rows",
                "PyTorch computes log_softmax over ignored tokens too, so inf or NaN in their logits makes their "
                "logits' gradient NaN, which reaches their hidden states' gradient and every weight column; "
                "the spec gives those tokens a zero logits' gradient.",
                _linear_ignored_rows_not_finite,
            ),
        ) + HALF_PRECISION["torch.nn.functional.linear+cross_entropy"],
        notes="unchunked: linear forms all (..., V) logits in the input dtype, then cross_entropy; chunk_size ignored; no z_loss option",
    ),
)


# Token-level losses ---------------------------------------------------------


def _zero_target_times_infinity(inputs, options, dtype) -> bool:
    """True when kl_div multiplies a zero target probability by an infinite log term.

    With probabilities that happens where log q = -inf. With log_target,
    kl_div computes exp(t) (t - log q), which is 0 * (-inf) wherever t = -inf.
    """
    if options.get("log_target", False):
        return bool(np.any(np.isneginf(inputs["targets"])))
    return bool(np.any((inputs["targets"] == 0) & np.isneginf(inputs["log_predictions"])))


def _batchmean_divides_by_first_axis(inputs, options, dtype) -> bool:
    """True when "batchmean" divides by the first axis' size, and that is not the number of rows."""
    shape = inputs["log_predictions"].shape
    return options.get("reduction", "batchmean") == "batchmean" and shape[0] != int(np.prod(shape[:-1]))


def _batchmean_of_nothing(inputs, options, dtype) -> bool:
    return options.get("reduction", "batchmean") == "batchmean" and inputs["log_predictions"].shape[0] == 0


def kl_div_native(log_predictions, targets, *, log_target=False, reduction="batchmean"):
    loss = torch.nn.functional.kl_div(log_predictions, targets.detach(), reduction=reduction, log_target=log_target)
    # kl_div's "none" is element-wise and the spec's is per row, so the adapter sums the class axis.
    return loss.sum(dim=-1) if reduction == "none" else loss


ZERO_TARGET_TIMES_INFINITY = Difference(
    "zero-target-times-infinity",
    "A zero target probability gives NaN (0 * inf) where log_predictions is -inf, and with log_target "
    "wherever the target is -inf; the spec takes the term as 0 (0 log 0 = 0).",
    _zero_target_times_infinity,
)


def _pos_weight_overflows(inputs, options, dtype) -> bool:
    """True when (1 + (pos_weight - 1) y) * max(-x, 0), a product the built-in forms, overflows the dtype."""
    pos_weight = inputs.get("pos_weight")
    if pos_weight is None:
        return False
    logits = inputs["logits"]
    factor = 1.0 + (np.broadcast_to(pos_weight, logits.shape) - 1.0) * inputs["targets"]
    with np.errstate(over="ignore", invalid="ignore"):
        product = factor * np.maximum(-logits, 0.0)
    return bool(np.any(np.abs(product) > float(torch.finfo(getattr(torch, dtype)).max)))


def _infinite_logits(inputs, options, dtype) -> bool:
    return bool(np.isinf(inputs["logits"]).any())


def _mean_of_empty_logits(inputs, options, dtype) -> bool:
    return options.get("reduction", "mean") == "mean" and inputs["logits"].size == 0


def bce_with_logits_native(logits, targets, *, weight=None, pos_weight=None, reduction="mean"):
    return torch.nn.functional.binary_cross_entropy_with_logits(
        logits,
        targets.detach(),
        weight=None if weight is None else weight.detach(),
        pos_weight=None if pos_weight is None else pos_weight.detach(),
        reduction=reduction,
    )


POS_WEIGHT_OVERFLOW = Difference(
    "pos-weight-overflow-near-dtype-max",
    "The built-in forms (1 + (pos_weight - 1) y) * log sigma(x) in the input dtype, which overflows to inf "
    "for logits near the dtype's most negative value when that factor exceeds 1, although the loss "
    "pos_weight * y * sp(-x) is finite; the spec's softplus form stays finite.",
    _pos_weight_overflows,
)

INFINITE_LOGITS = Difference(
    "infinite-logits-give-nan",
    "The built-in computes (1 - y) x - (1 + (pos_weight - 1) y) log sigma(x), which is NaN (0 * inf or "
    "inf - inf) at x = -inf for every y and at x = +inf for y = 1; the spec gives 0 where the target "
    "matches the infinite logit and +inf elsewhere. The gradient matches the spec.",
    _infinite_logits,
    covers=("value",),
)

NATIVES += (
    Implementation(
        loss="kl_divergence",
        name="torch.nn.functional.kl_div",
        kind="native",
        function=kl_div_native,
        differences=(
            Difference(
                "batchmean-divides-by-first-axis",
                "PyTorch's batchmean divides the sum by input.size(0), which is the number of rows only "
                "for rank-2 inputs; the spec divides by all rows, prod(shape[:-1]).",
                _batchmean_divides_by_first_axis,
            ),
            Difference(
                "batchmean-of-nothing-is-nan",
                "PyTorch divides by a first axis of size 0 and returns NaN; the spec returns 0.",
                _batchmean_of_nothing,
            ),
            ZERO_TARGET_TIMES_INFINITY,
        ),
        notes="targets detached; reduction='none' is element-wise in PyTorch, so the adapter sums the class axis",
    ),
    Implementation(
        loss="binary_cross_entropy_with_logits",
        name="torch.nn.functional.binary_cross_entropy_with_logits",
        kind="native",
        function=bce_with_logits_native,
        differences=(
            Difference(
                "mean-of-empty-is-nan",
                "PyTorch returns NaN for the mean of an empty input; the spec returns 0.",
                _mean_of_empty_logits,
            ),
            POS_WEIGHT_OVERFLOW,
            INFINITE_LOGITS,
        ) + HALF_PRECISION["torch.nn.functional.binary_cross_entropy_with_logits"],
        notes="targets, weight and pos_weight detached; weight and pos_weight broadcast as in the spec",
    ),
)
