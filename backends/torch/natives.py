"""Adapters that call PyTorch's built-in losses with the spec's signature."""

from __future__ import annotations

import numpy as np
import torch

from .._api import Difference, Implementation, uses_any


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
    # With reduction="none" the result is (N, d1, ...), which is already logits.shape[:-1] of the spec layout.
    return torch.nn.functional.cross_entropy(
        logits, targets, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction
    )


def mse_native(predictions, targets, *, reduction="mean"):
    return torch.nn.functional.mse_loss(predictions, targets, reduction=reduction)


def _mean_of_empty(inputs, options, dtype) -> bool:
    return options.get("reduction", "mean") == "mean" and inputs["predictions"].size == 0


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
        ),
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
        ),
        notes="called as is; PyTorch broadcasts mismatched shapes with a warning, the spec raises",
    ),
)
