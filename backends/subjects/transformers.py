"""Hugging Face Transformers' causal-LM loss as a subject: ``transformers.loss.loss_utils.ForCausalLMLoss``.

``ForCausalLMLoss(logits, labels, vocab_size, num_items_in_batch=None,
ignore_index=-100, shift_labels=None)`` (Transformers 4.46 and later) casts the
logits to float32, shifts the labels left and pads them with ignore_index
unless ``shift_labels`` is given, and calls ``torch.nn.functional.cross_entropy``
with reduction "mean", or "sum" divided by ``num_items_in_batch`` when that is
given. The spec ``causal_lm_cross_entropy`` states the same computation, so the
adapter below only maps the spec's ``shift=False`` to passing the labels as
``shift_labels``.
"""

from __future__ import annotations

from backends._api import Difference
from conformance.plugin import declare

SUBJECT = "transformers"


def for_causal_lm_loss(logits, labels, *, ignore_index: int = -100, shift: bool = True, num_items_in_batch=None):
    """Call ForCausalLMLoss with the spec's arguments; shift=False passes the labels as already shifted."""
    from transformers.loss.loss_utils import ForCausalLMLoss

    return ForCausalLMLoss(
        logits,
        labels,
        vocab_size=logits.shape[-1],
        num_items_in_batch=num_items_in_batch,
        ignore_index=ignore_index,
        shift_labels=None if shift else labels,
    )


def _nothing_counted(inputs, options, dtype) -> bool:
    """Return whether no label is counted and no num_items_in_batch is given, so the mean has no terms."""
    labels = inputs["labels"]
    read = labels[:, 1:] if options.get("shift", True) else labels
    return options.get("num_items_in_batch") is None and not (read != options.get("ignore_index", -100)).any()


def _uncounted_rows_not_finite(inputs, options, dtype) -> bool:
    """Return whether some position that is not counted has a -inf, inf or NaN logit."""
    import numpy as np

    logits, labels = inputs["logits"], inputs["labels"]
    predicted = labels[:, 1:] if options.get("shift", True) else labels
    counted = np.zeros(labels.shape, dtype=bool)
    counted[:, : predicted.shape[1]] = predicted != options.get("ignore_index", -100)
    return bool((~np.isfinite(logits[~counted])).any())


def _not_float32(inputs, options, dtype) -> bool:
    return dtype != "float32"


NOTHING_COUNTED = Difference(
    "nan-when-nothing-counted",
    "With no counted label and no num_items_in_batch, ForCausalLMLoss returns the NaN of "
    "torch.nn.functional.cross_entropy's mean over zero tokens (0/0); the spec returns 0 with zero gradient.",
    _nothing_counted,
)

NONFINITE_UNCOUNTED = Difference(
    "nonfinite-logits-in-uncounted-positions",
    "torch.nn.functional.cross_entropy computes log_softmax over every position, counted or not, so -inf or NaN "
    "logits at an ignored position (or at the last position, which predicts nothing after the shift) make that "
    "position's gradient NaN; the spec leaves uncounted positions out of the value and the gradient.",
    _uncounted_rows_not_finite,
    covers=("grad",),
)

FLOAT32_CAST = Difference(
    "float32-cast",
    "ForCausalLMLoss casts the logits to float32 before the loss (logits.float() in transformers/loss/loss_utils.py), "
    "so float64 inputs lose precision to float32 and half-precision inputs are computed more accurately than "
    "their own dtype. The errors are excused only within the float32 tolerance.",
    _not_float32,
    within="float32",
)


def declarations():
    """Return the declaration of ForCausalLMLoss against causal_lm_cross_entropy."""
    return [
        declare(
            for_causal_lm_loss,
            loss="causal_lm_cross_entropy",
            backend="torch",
            name="transformers.ForCausalLMLoss",
            subject=SUBJECT,
            requires=("transformers",),
            differences=(NOTHING_COUNTED, NONFINITE_UNCOUNTED, FLOAT32_CAST),
            notes="shift=False passes the labels as shift_labels; vocab_size is the logits' last dimension.",
            description="Hugging Face Transformers' causal-LM loss, transformers.loss.loss_utils.ForCausalLMLoss, on PyTorch tensors.",
        )
    ]
