"""Hypothesis strategies that draw valid inputs for every spec loss.

``STRATEGIES[loss]`` draws an ``Example``: float64 and integer NumPy arrays
keyed by argument name, the keyword options and the dtype to test. Floating
inputs are already rounded to that dtype, so the saved example contains
exactly the values that were tested. Values below the dtype's smallest normal
number are set to 0, because XLA on CPU flushes subnormal numbers to zero, a
platform setting rather than a loss's behaviour.

Every example lies in the spec's domain: the spec must accept it without
raising, because the fuzzer checks agreement, not the rejection of bad input.
The strategies cover empty and size-1 axes, every option and reduction,
magnitudes from the dtype's smallest normal number to 1e4 (and near the
dtype's maximum where the spec promises finite results there), ties, masks,
ignored rows, and non-finite junk in positions that the spec never reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ..dtypes import DTYPES, NUMPY_DTYPES, round_to

# Small sizes keep one example to a few milliseconds per implementation. The
# bugs that fuzzing looks for (ties, extremes, empty axes, option combinations)
# show up at these sizes.
MAX_SIDE = 5
MAX_CLASSES = 7
# ``lossparity fuzz --max-side N`` lowers every drawn side (class counts and
# sequence lengths included) to at most N. Fewer shapes mean fewer compilations
# for a framework that compiles each operation per shape, as JAX does in eager mode.
SIDE_LIMIT: int | None = None


def _limit(value: int, floor: int = 0) -> int:
    """Lower a largest side to SIDE_LIMIT when one is set, but not below floor."""
    return value if SIDE_LIMIT is None else max(floor, min(value, SIDE_LIMIT))


@dataclass(frozen=True)
class Example:
    """One drawn input: arrays (None for an absent optional tensor), options and the dtype to test."""

    inputs: dict
    options: dict
    dtype: str


def smallest_normal(dtype: str) -> float:
    return float(np.finfo(NUMPY_DTYPES[dtype]).tiny)


def largest_finite(dtype: str) -> float:
    return float(np.finfo(NUMPY_DTYPES[dtype]).max)


def to_dtype(array: np.ndarray, dtype: str) -> np.ndarray:
    """Round to dtype and set subnormal results to 0, keeping infinities and NaN."""
    rounded = round_to(array, dtype)
    subnormal = (rounded != 0) & (np.abs(rounded) < smallest_normal(dtype))
    return np.where(subnormal, 0.0, rounded)


def scales(dtype: str, *, huge: float = 1e4, tiny: bool = True) -> st.SearchStrategy[float]:
    """Draw the magnitude of an array's values. Shrinking moves to the first entry, 1.

    The tiny scale is chosen so that most values stay above the dtype's smallest normal number.
    """
    choices = [1.0, 4.0, 16.0, 0.25]
    if tiny:
        choices.append(max(1e-6, smallest_normal(dtype) * 1e3) if dtype != "float64" else 1e-30)
    choices.append(huge)
    # huge is also the upper bound, so probabilities (huge = 1) stay in [0, 1].
    return st.sampled_from([choice for choice in choices if choice <= huge])


TIE_VALUES = (0.0, 1.0, -1.0, 0.5, -0.5, 2.0)


@st.composite
def floats(draw, shape, dtype: str, *, huge: float = 1e4, tiny: bool = True, low: float = -1.0, high: float = 1.0, offset: float = 0.0):
    """Draw a float array of shape in [low, high] x scale + offset, or ties from a few values, rounded to dtype."""
    scale = draw(scales(dtype, huge=huge, tiny=tiny))
    if draw(st.booleans()):
        values = draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([v for v in TIE_VALUES if low <= v <= high] or [low])))
    else:
        values = draw(hnp.arrays(np.float64, shape, elements=st.floats(low, high, allow_nan=False, allow_infinity=False)))
    return to_dtype(values * scale + offset, dtype)


def dtypes() -> st.SearchStrategy[str]:
    return st.sampled_from(DTYPES)


def bools(shape) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.bool_, shape, elements=st.booleans())


def junk(dtype: str) -> st.SearchStrategy[float]:
    """Draw a value for a position the spec never reads: NaN, an infinity, or the dtype's maximum."""
    return st.sampled_from([np.nan, np.inf, -np.inf, largest_finite(dtype)])


def side(min_value: int = 0, max_value: int | None = None) -> st.SearchStrategy[int]:
    return st.integers(min_value, _limit(MAX_SIDE if max_value is None else max_value, min_value))


def reductions() -> st.SearchStrategy[str]:
    return st.sampled_from(("mean", "sum", "none"))


def fractions(values=(0.0, 0.1, 0.25, 0.5)) -> st.SearchStrategy[float]:
    return st.sampled_from(values)


def _fill_where(array: np.ndarray, where: np.ndarray, value: float) -> np.ndarray:
    return np.where(where, value, array)


# Classification ---------------------------------------------------------


@st.composite
def _class_targets(draw, shape, classes: int, ignore_index: int, *, allow_ignored: bool = True):
    targets = draw(hnp.arrays(np.int64, shape, elements=st.integers(0, classes - 1)))
    if allow_ignored and draw(st.booleans()):
        ignored = draw(bools(shape))
        targets = np.where(ignored, ignore_index, targets).astype(np.int64)
    return targets


def _ignore_indices(classes: int) -> st.SearchStrategy[int]:
    # -100 is PyTorch's default. An id inside [0, C) ignores the rows of that class.
    return st.sampled_from((-100, -1, classes - 1, 0))


@st.composite
def _probability_rows(draw, shape, dtype: str):
    """Class probabilities that sum to about 1 per row, with exact zeros and ties."""
    weights = draw(hnp.arrays(np.float64, shape, elements=st.sampled_from((0.0, 0.0, 1.0, 2.0, 0.5, 3.0)) | st.floats(0.0, 4.0)))
    totals = weights.sum(axis=-1, keepdims=True)
    rows = np.where(totals > 0, weights / np.where(totals > 0, totals, 1.0), 1.0 / max(shape[-1], 1))
    return to_dtype(rows, dtype)


@st.composite
def cross_entropy(draw):
    dtype = draw(dtypes())
    classes = draw(side(1, MAX_CLASSES))
    batch = tuple(draw(st.lists(side(), min_size=0, max_size=2)))
    shape = batch + (classes,)
    logits = draw(floats(shape, dtype))
    ignore_index = draw(_ignore_indices(classes))
    probability = draw(st.booleans())
    if probability:
        targets = draw(_probability_rows(shape, dtype))
    else:
        targets = draw(_class_targets(batch, classes, ignore_index))
        if draw(st.booleans()):
            # Ignored rows' logits are never read, so they may be infinite or NaN.
            logits = _fill_where(logits, (targets == ignore_index)[..., None], draw(junk(dtype)))
    weight = draw(st.none() | floats((classes,), dtype, huge=16.0, low=0.0, high=1.0))
    options = {
        "ignore_index": ignore_index,
        "label_smoothing": draw(fractions((0.0, 0.1, 0.5, 1.0))),
        "z_loss": draw(st.sampled_from((0.0, 1e-4, 0.5))),
        "reduction": draw(reductions()),
    }
    return Example({"logits": logits, "targets": targets, "weight": weight}, options, dtype)


@st.composite
def linear_cross_entropy(draw):
    dtype = draw(dtypes())
    vocab = draw(side(1, MAX_CLASSES))
    hidden_size = draw(side(1, 4))
    tokens = tuple(draw(st.lists(side(), min_size=0, max_size=2)))
    # Logits are sums of hidden_size products, so each factor stays at most 100.
    hidden = draw(floats(tokens + (hidden_size,), dtype, huge=100.0))
    weight = draw(floats((vocab, hidden_size), dtype, huge=100.0))
    ignore_index = draw(_ignore_indices(vocab))
    targets = draw(_class_targets(tokens, vocab, ignore_index))
    if draw(st.booleans()):
        # An ignored token's hidden state is never read, so it may be infinite or NaN.
        hidden = _fill_where(hidden, (targets == ignore_index)[..., None], draw(junk(dtype)))
    bias = draw(st.none() | floats((vocab,), dtype, huge=100.0))
    options = {
        "ignore_index": ignore_index,
        "label_smoothing": draw(fractions((0.0, 0.1, 1.0))),
        "z_loss": draw(st.sampled_from((0.0, 1e-4))),
        "reduction": draw(reductions()),
        "chunk_size": draw(st.sampled_from((None, 1, 2, 3, 64))),
    }
    return Example({"hidden": hidden, "weight": weight, "targets": targets, "bias": bias}, options, dtype)


@st.composite
def mse(draw):
    dtype = draw(dtypes())
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=_limit(MAX_SIDE)))
    # Squares of values near 1e2 already reach 1e4, and the float16 maximum is 65504.
    huge = 100.0 if dtype == "float16" else 1e4
    predictions = draw(floats(shape, dtype, huge=huge))
    targets = draw(floats(shape, dtype, huge=huge))
    return Example({"predictions": predictions, "targets": targets}, {"reduction": draw(reductions())}, dtype)


@st.composite
def causal_lm_cross_entropy(draw):
    dtype = draw(dtypes())
    batch, length, vocab = draw(side(0, 3)), draw(side(0, 4)), draw(side(1, MAX_CLASSES))
    logits = draw(floats((batch, length, vocab), dtype))
    ignore_index = draw(_ignore_indices(vocab))
    labels = draw(_class_targets((batch, length), vocab, ignore_index))
    shift = draw(st.booleans())
    if shift and batch and length and draw(st.booleans()):
        # With shift, labels[:, 0] is never read or checked, so it may contain any id.
        labels[:, 0] = draw(st.sampled_from((10**6, -7)))
    if draw(st.booleans()):
        predicted = labels[:, 1:] if shift else labels
        uncounted = np.ones((batch, length), dtype=bool)
        uncounted[:, : predicted.shape[1]] = predicted == ignore_index
        logits = _fill_where(logits, uncounted[..., None], draw(junk(dtype)))
    options = {
        "ignore_index": ignore_index,
        "shift": shift,
        "num_items_in_batch": draw(st.sampled_from((None, 1, 3, 7.5, 1000))),
    }
    return Example({"logits": logits, "labels": labels}, options, dtype)


@st.composite
def kl_divergence(draw):
    dtype = draw(dtypes())
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=_limit(MAX_SIDE)))
    log_target = draw(st.booleans())
    log_predictions = draw(floats(shape, dtype, high=0.0, huge=100.0))
    probabilities = draw(_probability_rows(shape, dtype))
    if log_target:
        with np.errstate(divide="ignore"):
            targets = to_dtype(np.log(probabilities), dtype)
    else:
        targets = probabilities
    if draw(st.booleans()):
        # log q = -inf where p = 0 is part of the domain (each term is 0 there).
        log_predictions = _fill_where(log_predictions, probabilities == 0, -np.inf)
    options = {"log_target": log_target, "reduction": draw(st.sampled_from(("batchmean", "sum", "none")))}
    return Example({"log_predictions": log_predictions, "targets": targets}, options, dtype)


@st.composite
def _broadcastable_shape(draw, shape):
    """Draw a shape that broadcasts to shape: some trailing axes, each of full size or 1."""
    count = draw(st.integers(0, len(shape)))
    trailing = shape[len(shape) - count :]
    return tuple(size if draw(st.booleans()) else 1 for size in trailing)


@st.composite
def binary_cross_entropy_with_logits(draw):
    dtype = draw(dtypes())
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=_limit(MAX_SIDE)))
    # The spec promises exact, finite losses for logits up to the dtype's
    # maximum. Near it, weights stay at most 1 and the reduction is "none",
    # because a weighted element or a sum beyond the maximum overflows in
    # every dtype (the spec says so for sums).
    near_maximum = draw(st.booleans())
    huge = largest_finite(dtype) / 2 if near_maximum else 1e4
    weight_scale = 1.0 if near_maximum else 16.0
    logits = draw(floats(shape, dtype, huge=huge))
    targets = draw(floats(shape, dtype, low=0.0, high=1.0, huge=1.0))
    weight = None
    pos_weight = None
    if draw(st.booleans()):
        weight = draw(floats(draw(_broadcastable_shape(shape)), dtype, low=0.0, high=1.0, huge=weight_scale))
    if draw(st.booleans()):
        pos_weight = draw(floats(draw(_broadcastable_shape(shape)), dtype, low=0.0, high=1.0, huge=weight_scale))
    reduction = "none" if near_maximum else draw(reductions())
    return Example({"logits": logits, "targets": targets, "weight": weight, "pos_weight": pos_weight}, {"reduction": reduction}, dtype)


# CTC ----------------------------------------------------------------------


@st.composite
def ctc_loss(draw):
    dtype = draw(dtypes())
    batch, frames, classes = draw(side(0, 3)), draw(side(0, 5)), draw(side(1, 5))
    blank = draw(st.sampled_from(sorted({0, classes - 1})))
    width = draw(side(0, 3))
    labels = [k for k in range(classes) if k != blank]
    input_lengths = np.asarray(draw(st.lists(st.integers(0, frames), min_size=batch, max_size=batch)), dtype=np.int64)
    if labels:
        target_lengths = np.asarray(draw(st.lists(st.integers(0, width), min_size=batch, max_size=batch)), dtype=np.int64)
        targets = draw(hnp.arrays(np.int64, (batch, width), elements=st.sampled_from(labels)))
    else:
        # Only the blank class exists, so every target is empty.
        target_lengths = np.zeros(batch, dtype=np.int64)
        targets = np.zeros((batch, width), dtype=np.int64)
    padding = np.arange(width)[None, :] >= target_lengths[:, None]
    if draw(st.booleans()):
        # Padding labels may be any integer.
        targets = np.where(padding, draw(st.sampled_from((blank, -1, 99))), targets).astype(np.int64)
    # The spec assumes finite logits inside the input length. They reach 1e3 here.
    logits = draw(floats((batch, frames, classes), dtype, huge=1e3))
    if draw(st.booleans()):
        outside = np.arange(frames)[None, :] >= input_lengths[:, None]
        logits = _fill_where(logits, outside[..., None], draw(junk(dtype)))
    options = {"blank": blank, "reduction": draw(reductions()), "zero_infinity": draw(st.booleans())}
    inputs = {"logits": logits, "targets": targets, "input_lengths": input_lengths, "target_lengths": target_lengths}
    return Example(inputs, options, dtype)


# Preference -----------------------------------------------------------------


@st.composite
def _token_batch(draw, dtype, *, high=0.0, huge=1e4):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=_limit(MAX_SIDE)))
    values = draw(floats(shape, dtype, high=high, huge=huge))
    mask = draw(bools(shape))
    if draw(st.booleans()):
        values = _fill_where(values, ~mask, draw(junk(dtype)))
    return values, mask


@st.composite
def sequence_logps(draw):
    dtype = draw(dtypes())
    token_logps, mask = draw(_token_batch(dtype))
    return Example({"token_logps": token_logps, "mask": mask}, {"average": draw(st.booleans())}, dtype)


def _batch_shape():
    return hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=_limit(MAX_SIDE))


@st.composite
def dpo_loss(draw):
    dtype = draw(dtypes())
    shape = draw(_batch_shape())
    names = ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps")
    inputs = {name: draw(floats(shape, dtype, high=0.0)) for name in names}
    loss_type = draw(st.sampled_from(("sigmoid", "robust", "ipo", "hinge")))
    smoothing = draw(fractions((0.0, 0.1, 0.25, 0.49))) if loss_type in ("sigmoid", "robust") else 0.0
    options = {
        # beta = 0.5 with h = 2 puts pairs on the hinge's kink, beta h = 1.
        "beta": draw(st.sampled_from((0.1, 0.5, 1.0, 2.0, 1e-3, 100.0))),
        "label_smoothing": smoothing,
        "loss_type": loss_type,
        "reference_free": draw(st.booleans()),
        "reduction": draw(reductions()),
    }
    return Example(inputs, options, dtype)


@st.composite
def simpo_loss(draw):
    dtype = draw(dtypes())
    shape = draw(_batch_shape())
    inputs = {name: draw(floats(shape, dtype, high=0.0)) for name in ("policy_chosen_logps", "policy_rejected_logps")}
    options = {
        "beta": draw(st.sampled_from((2.0, 0.5, 1e-3, 10.0))),
        "gamma": draw(st.sampled_from((0.5, 0.0, 1.0, 5.0))),
        "label_smoothing": draw(fractions((0.0, 0.1, 0.49))),
    }
    return Example(inputs, options, dtype)


@st.composite
def _negative(draw, shape, dtype):
    """Draw average log-probabilities of at most -4 epsilon of the dtype.

    The spec states full relative accuracy for log1mexp(a) from -1e4 up to
    a few machine epsilons below 0, so closer to 0 is outside what it promises.
    """
    closest = 4 * float(np.finfo(NUMPY_DTYPES[dtype]).eps)
    magnitudes = draw(floats(shape, dtype, low=0.0, high=1.0))
    return -to_dtype(np.maximum(magnitudes, closest), dtype)


@st.composite
def orpo_loss(draw):
    dtype = draw(dtypes())
    shape = draw(_batch_shape())
    inputs = {
        "chosen_avg_logps": draw(_negative(shape, dtype)),
        "rejected_avg_logps": draw(_negative(shape, dtype)),
        "chosen_nll": draw(floats(shape, dtype, low=0.0)),
    }
    return Example(inputs, {"lam": draw(st.sampled_from((0.1, 0.0, 1.0, 10.0)))}, dtype)


@st.composite
def kto_loss(draw):
    dtype = draw(dtypes())
    shape = draw(_batch_shape())
    inputs = {
        "policy_logps": draw(floats(shape, dtype, high=0.0)),
        "reference_logps": draw(floats(shape, dtype, high=0.0)),
        "desirable": draw(bools(shape)),
        "kl_estimate": draw(floats((), dtype)),
    }
    options = {
        "beta": draw(st.sampled_from((0.1, 1.0, 1e-3, 10.0))),
        "desirable_weight": draw(st.sampled_from((1.0, 0.0, 1.33))),
        "undesirable_weight": draw(st.sampled_from((1.0, 0.0, 0.75))),
    }
    return Example(inputs, options, dtype)


# Policy -----------------------------------------------------------------------


@st.composite
def _masked_tokens(draw, dtype, *, min_dims=1, max_dims=2):
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=0, max_side=_limit(MAX_SIDE)))
    return shape, draw(bools(shape))


@st.composite
def ppo_policy_loss(draw):
    dtype = draw(dtypes())
    shape, mask = draw(_masked_tokens(dtype))
    old_logps = draw(floats(shape, dtype, high=0.0, huge=30.0))
    if draw(st.booleans()):
        # Equal log-probs put every ratio at exactly 1, on the clip boundaries when a clip is 0.
        logps = old_logps.copy()
    else:
        logps = draw(floats(shape, dtype, high=0.0, huge=30.0))
    per_sequence = draw(st.booleans())
    advantages = draw(floats(shape[:-1] if per_sequence else shape, dtype))
    if draw(st.booleans()):
        # Masked tokens are never read.
        value = draw(junk(dtype))
        logps = _fill_where(logps, ~mask, value)
        old_logps = _fill_where(old_logps, ~mask, value)
    options = {
        "clip_low": draw(st.sampled_from((0.2, 0.0, 0.5, 0.999))),
        "clip_high": draw(st.sampled_from((0.2, 0.0, 0.28, 5.0))),
        "dual_clip": draw(st.sampled_from((None, 3.0, 1.5))),
        "aggregation": draw(st.sampled_from(("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"))),
    }
    return Example({"logps": logps, "old_logps": old_logps, "advantages": advantages, "mask": mask}, options, dtype)


@st.composite
def value_loss(draw):
    dtype = draw(dtypes())
    shape, mask = draw(_masked_tokens(dtype, min_dims=0))
    huge = 100.0 if dtype == "float16" else 1e4  # The squared errors must stay below the float16 maximum.
    if draw(st.booleans()):
        # A change of exactly c = 0.25 lies on the clip boundary. Values in
        # quarters keep V - V_old exact in every dtype, so float64 and the
        # tested dtype agree on which side of the boundary each token is.
        values = draw(hnp.arrays(np.float64, shape, elements=st.integers(-16, 16))) / 4.0
        steps = draw(hnp.arrays(np.float64, shape, elements=st.sampled_from((-1.0, 0.0, 1.0))))
        old_values = values - 0.25 * steps
    else:
        values = draw(floats(shape, dtype, huge=huge))
        old_values = draw(floats(shape, dtype, huge=huge))
    returns = draw(floats(shape, dtype, huge=huge))
    options = {"clip": draw(st.sampled_from((0.2, None, 0.0, 0.25, 10.0))), "scale": draw(st.sampled_from((0.5, 1.0, 0.0)))}
    return Example({"values": values, "old_values": old_values, "returns": returns, "mask": mask}, options, dtype)


@st.composite
def kl_penalty(draw):
    dtype = draw(dtypes())
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=_limit(MAX_SIDE)))
    logps = draw(floats(shape, dtype, high=0.0, huge=30.0))
    ref_logps = logps.copy() if draw(st.booleans()) else draw(floats(shape, dtype, high=0.0, huge=30.0))
    return Example({"logps": logps, "ref_logps": ref_logps}, {"estimator": draw(st.sampled_from(("k1", "k2", "k3")))}, dtype)


@st.composite
def entropy_from_logits(draw):
    dtype = draw(dtypes())
    tokens = tuple(draw(st.lists(side(), min_size=0, max_size=2)))
    vocab = draw(side(1, MAX_CLASSES))
    logits = draw(floats(tokens + (vocab,), dtype))
    mask = draw(bools(tokens))
    if vocab > 1 and draw(st.booleans()):
        # -inf marks impossible classes; the last class stays finite, so no counted row is all -inf.
        impossible = draw(bools(tokens + (vocab,)))
        impossible[..., -1] = False
        logits = _fill_where(logits, impossible, -np.inf)
    if draw(st.booleans()):
        logits = _fill_where(logits, ~mask[..., None], draw(junk(dtype)))
    return Example({"logits": logits, "mask": mask}, {}, dtype)


@st.composite
def gae(draw):
    dtype = draw(dtypes())
    shape = (draw(side()), draw(side()))
    mask = draw(bools(shape))
    rewards = draw(floats(shape, dtype, huge=100.0))
    values = draw(floats(shape, dtype, huge=100.0))
    if draw(st.booleans()):
        value = draw(junk(dtype))
        rewards = _fill_where(rewards, ~mask, value)
        values = _fill_where(values, ~mask, value)
    options = {"gamma": draw(st.sampled_from((1.0, 0.99, 0.0, 0.5))), "lam": draw(st.sampled_from((0.95, 1.0, 0.0, 0.5)))}
    return Example({"rewards": rewards, "values": values, "mask": mask}, options, dtype)


@st.composite
def grpo_advantages(draw):
    dtype = draw(dtypes())
    count = draw(side(0, 8))
    rewards = draw(floats((count,), dtype))
    group_ids = draw(hnp.arrays(np.int64, (count,), elements=st.sampled_from((0, 1, 2, -5, 10**9))))
    options = {"eps": draw(st.sampled_from((1e-6, 0.0, 1e-4, 1.0))), "scale_by_std": draw(st.booleans())}
    return Example({"rewards": rewards, "group_ids": group_ids}, options, dtype)


# Ranking and alignment ----------------------------------------------------------


@st.composite
def _ranked(draw, min_items: int, *, offset_choices=(0.0,)):
    dtype = draw(dtypes())
    shape = (draw(side(0, 4)), draw(side(min_items, 5)))
    offset = draw(st.sampled_from(offset_choices))
    scores = draw(floats(shape, dtype, offset=offset))
    mask = draw(st.none() | bools(shape))
    if mask is not None and draw(st.booleans()):
        scores = _fill_where(scores, ~mask, draw(junk(dtype)))
    return dtype, scores, mask


@st.composite
def ranking_loss(draw):
    dtype, rewards, mask = draw(_ranked(2))
    return Example({"rewards": rewards, "mask": mask}, {}, dtype)


@st.composite
def ranking_loss_pooled(draw):
    dtype, rewards, mask = draw(_ranked(2))
    return Example({"rewards": rewards, "mask": mask}, {}, dtype)


@st.composite
def plackett_luce_loss(draw):
    # Scores far from 0 (4096 + small differences) break a cumulative logsumexp's gradient.
    dtype, scores, mask = draw(_ranked(1, offset_choices=(0.0, 4096.0, -300.0)))
    return Example({"scores": scores, "mask": mask}, {}, dtype)


@st.composite
def sequence_alignment_loss(draw):
    dtype = draw(dtypes())
    leading = tuple(draw(st.lists(side(0, 3), min_size=0, max_size=2)))
    sources, targets = draw(side(0, 4)), draw(side(1, 5))
    scores = draw(floats(leading + (sources, targets), dtype, huge=1e3))
    mask = None
    if draw(st.booleans()):
        mask = draw(bools(leading + (targets,)))
        mask[..., 0] = True  # Every sequence keeps a valid target for the gold indices.
    valid = mask if mask is not None else np.ones(leading + (targets,), dtype=bool)
    # Gold indices point at valid targets: the first valid one, or another valid one.
    choice = draw(hnp.arrays(np.int64, leading + (sources,), elements=st.integers(0, targets - 1)))
    valid_rows = np.broadcast_to(valid[..., None, :], leading + (sources, targets))
    picked_valid = np.take_along_axis(valid_rows, choice[..., None], axis=-1)[..., 0]
    alignment = np.where(picked_valid, choice, 0).astype(np.int64)
    if targets > 1 and draw(st.booleans()):
        # +inf cost at a non-gold valid position takes no probability.
        infinite = draw(bools(leading + (sources, targets)))
        gold = np.arange(targets) == alignment[..., None]
        scores = _fill_where(scores, infinite & ~gold, np.inf)
    if mask is not None and draw(st.booleans()):
        scores = _fill_where(scores, ~mask[..., None, :], draw(junk(dtype)))
    # temperature=None is invalid (the spec takes a number or a 0-d array), so the default is used by leaving it out.
    inputs = {"scores": scores, "alignment": alignment, "mask": mask}
    options = {"reduction": draw(reductions())}
    temperature = draw(st.sampled_from((None, "option", "array")))
    value = draw(st.sampled_from((0.75, 1.0, 0.1, 4.0)))
    if temperature == "option":
        options["temperature"] = value
    elif temperature == "array":
        inputs["temperature"] = to_dtype(np.asarray(value), dtype)
    return Example(inputs, options, dtype)


@st.composite
def bradley_terry_loss(draw):
    dtype = draw(dtypes())
    shape = draw(_batch_shape())
    # Reward differences of any size are in the domain. A quarter of the
    # maximum keeps r_c - r_r finite, and near it the reduction is "none",
    # because a sum of such losses overflows in every implementation.
    near_maximum = draw(st.booleans())
    huge = largest_finite(dtype) / 4 if near_maximum else 1e4
    chosen = draw(floats(shape, dtype, huge=huge))
    rejected = draw(floats(shape, dtype, huge=huge))
    margin = draw(st.none() | floats(shape, dtype, low=0.0, high=3.0, huge=1.0))
    center = draw(st.sampled_from((0.0, 0.01, 1.0)))
    if center and dtype == "float16":
        # eta (r_c + r_r)^2 would overflow float16 for rewards near its maximum.
        chosen, rejected = np.clip(chosen, -100, 100), np.clip(rejected, -100, 100)
    inputs = {"chosen_rewards": chosen, "rejected_rewards": rejected, "margin": margin}
    reduction = "none" if near_maximum else draw(reductions())
    return Example(inputs, {"center_coefficient": center, "reduction": reduction}, dtype)


STRATEGIES = {
    "gae": gae(),
    "grpo_advantages": grpo_advantages(),
    "cross_entropy": cross_entropy(),
    "linear_cross_entropy": linear_cross_entropy(),
    "mse": mse(),
    "causal_lm_cross_entropy": causal_lm_cross_entropy(),
    "kl_divergence": kl_divergence(),
    "binary_cross_entropy_with_logits": binary_cross_entropy_with_logits(),
    "ctc_loss": ctc_loss(),
    "sequence_logps": sequence_logps(),
    "dpo_loss": dpo_loss(),
    "simpo_loss": simpo_loss(),
    "orpo_loss": orpo_loss(),
    "kto_loss": kto_loss(),
    "ppo_policy_loss": ppo_policy_loss(),
    "value_loss": value_loss(),
    "kl_penalty": kl_penalty(),
    "entropy_from_logits": entropy_from_logits(),
    "ranking_loss": ranking_loss(),
    "ranking_loss_pooled": ranking_loss_pooled(),
    "plackett_luce_loss": plackett_luce_loss(),
    "sequence_alignment_loss": sequence_alignment_loss(),
    "bradley_terry_loss": bradley_terry_loss(),
}
