"""TensorFlow mirrors of the spec's reward-model losses."""

from __future__ import annotations

import tensorflow as tf

from losses._checks import validate_bradley_terry

from ._common import compute_dtype, tensor_info
from .classification import _reduce


def bradley_terry_loss(
    chosen_rewards,
    rejected_rewards,
    *,
    margin=None,
    center_coefficient: float = 0.0,
    reduction: str = "mean",
):
    """Mirror of ``losses.bradley_terry_loss``: softplus(-(r_c - r_r - m)) + eta (r_c + r_r)^2."""
    validate_bradley_terry(
        tensor_info("chosen_rewards", chosen_rewards),
        tensor_info("rejected_rewards", rejected_rewards),
        None if margin is None else tensor_info("margin", margin),
        center_coefficient=center_coefficient,
        reduction=reduction,
    )
    out_dtype = chosen_rewards.dtype
    work_dtype = compute_dtype(out_dtype)
    chosen = tf.cast(chosen_rewards, work_dtype)
    rejected = tf.cast(rejected_rewards, work_dtype)

    difference = chosen - rejected
    if margin is not None:
        difference = difference - tf.stop_gradient(tf.cast(margin, work_dtype))
    # softplus(-d) = -log sigmoid(d), exact for any finite d.
    per_pair = -tf.math.log_sigmoid(difference)
    if center_coefficient:
        per_pair = per_pair + center_coefficient * tf.square(chosen + rejected)

    return tf.cast(_reduce(per_pair, reduction), out_dtype)
