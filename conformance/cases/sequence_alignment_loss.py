"""Cases for sequence_alignment_loss: padded targets, +inf costs, array and float temperatures, reductions."""

from __future__ import annotations

import numpy as np

from . import Case, ErrorCase
from ._nonfinite import IGNORED_WHERE_MASKED, RAISE, build_of, nonfinite_cases


def embedding_costs(rng, batch, sources, targets, lengths=None, width=16, noise=0.5):
    """Costs of a near-monotone alignment: squared distances between embeddings, divided by the width.

    Source position i is a noisy copy of its gold target j(i), which moves
    forward with i. Returns (scores, alignment, mask); mask is None without lengths.
    """
    if lengths is None:
        lengths = np.full(batch, targets)
    target_embeddings = rng.standard_normal((batch, targets, width))
    progress = (np.arange(sources) + 0.5) / sources
    alignment = np.minimum((progress[None, :] * lengths[:, None]).astype(np.int64), lengths[:, None] - 1)
    jitter = rng.integers(-1, 2, size=alignment.shape)
    alignment = np.clip(alignment + jitter, 0, lengths[:, None] - 1)

    gold_embeddings = np.take_along_axis(target_embeddings, alignment[..., None], axis=1)
    source_embeddings = gold_embeddings + noise * rng.standard_normal(gold_embeddings.shape)
    scores = np.sum((source_embeddings[:, :, None, :] - target_embeddings[:, None, :, :]) ** 2, axis=-1) / width
    mask = None if (lengths == targets).all() else np.arange(targets)[None, :] < lengths[:, None]
    return scores, alignment, mask


def _alignment(name, *, shape, padded=False, temperature=None, reduction="sum", junk=np.nan, group="small", compiled=False):
    """Build a case on embedding costs; temperature is None (the default), a float option, or ("array", value)."""
    batch, sources, targets = shape

    def build(rng):
        lengths = rng.integers(max(1, targets // 2), targets + 1, size=batch) if padded else None
        if padded:
            lengths[0] = targets // 2  # At least one sequence is padded.
        scores, alignment, mask = embedding_costs(rng, batch, sources, targets, lengths)
        if mask is not None:
            # Padded costs hold junk that no implementation may read.
            scores = np.where(mask[:, None, :], scores, junk)
        inputs = {"scores": scores, "alignment": alignment, "mask": mask}
        options = {"reduction": reduction}
        if isinstance(temperature, tuple):
            inputs["temperature"] = np.asarray(temperature[1])
        elif temperature is not None:
            options["temperature"] = temperature
        return inputs, options

    return Case(name, group, build, compiled=compiled)


def _more_leading_axes(rng):
    # scores (2, 3, 4, 6): two leading axes, with the mask (2, 3, 6) shared by the 4 source positions.
    scores = rng.uniform(0.0, 3.0, size=(2, 3, 4, 6))
    mask = rng.random((2, 3, 6)) < 0.7
    mask[..., 0] = True
    alignment = np.zeros((2, 3, 4), dtype=np.int64)
    for index in np.ndindex(2, 3):
        alignment[index] = rng.choice(np.flatnonzero(mask[index]), size=4)
    inputs = {"scores": scores, "alignment": alignment, "mask": mask, "temperature": np.asarray(0.75)}
    return inputs, {"reduction": "none"}


def _inf_costs(rng):
    # +inf costs take no probability without any mask; none sits at a gold position.
    scores = rng.uniform(0.0, 2.0, size=(3, 5, 6))
    alignment = rng.integers(0, 6, size=(3, 5))
    blocked = rng.random(scores.shape) < 0.4
    np.put_along_axis(blocked, alignment[..., None], False, axis=-1)
    scores = np.where(blocked, np.inf, scores)
    return {"scores": scores, "alignment": alignment, "mask": None, "temperature": np.asarray(0.5)}, {"reduction": "none"}


def _ties(rng):
    # Sequence 0: equal costs, so the softmax is uniform and each position costs log N.
    # Sequence 1: the gold target ties with one other target at the lowest cost.
    # The tied sequence alone has d/dtau = 0, which float32 rounding cannot hit
    # exactly, so the tie-break sequence keeps the temperature gradient away from 0.
    scores = np.full((2, 4, 5), 1.25)
    alignment = rng.integers(0, 5, size=(2, 4))
    scores[1] = rng.uniform(1.0, 3.0, size=(4, 5))
    np.put_along_axis(scores[1], alignment[1][:, None], 0.5, axis=-1)
    np.put_along_axis(scores[1], ((alignment[1] + 1) % 5)[:, None], 0.5, axis=-1)
    return {"scores": scores, "alignment": alignment, "mask": None, "temperature": np.asarray(0.5)}, {"reduction": "sum"}


def _tiny_temperature(rng):
    # tau = 1/64 (exact in every dtype) turns costs up to 4 into logits down to -256.
    scores = rng.uniform(0.0, 4.0, size=(2, 6, 8))
    alignment = rng.integers(0, 8, size=(2, 6))
    return {"scores": scores, "alignment": alignment, "mask": None, "temperature": np.asarray(1 / 64)}, {"reduction": "mean"}


def _no_sources(rng):
    # M = 0 source positions: the mean over nothing is 0 with zero gradient.
    inputs = {
        "scores": np.zeros((2, 0, 5)),
        "alignment": np.zeros((2, 0), dtype=np.int64),
        "mask": None,
        "temperature": np.asarray(0.5),
    }
    return inputs, {"reduction": "mean"}


def _single_target(rng):
    # N = 1: the only target has probability 1, so every loss and gradient is 0.
    scores = rng.uniform(0.0, 2.0, size=(3, 4, 1))
    return {"scores": scores, "alignment": np.zeros((3, 4), dtype=np.int64), "mask": None, "temperature": np.asarray(2.0)}, {
        "reduction": "sum"
    }


CASES = [
    _alignment("default-temperature-sum", shape=(2, 5, 7)),
    _alignment("masked-array-temperature-none", shape=(3, 6, 8), padded=True, temperature=("array", 0.5), reduction="none", compiled=True),
    _alignment("float-temperature-mean", shape=(2, 5, 7), temperature=2.0, reduction="mean", compiled=True),
    _alignment("masked-array-temperature-sum", shape=(3, 6, 8), padded=True, temperature=("array", 0.25), junk=np.inf),
    Case("more-leading-axes", "small", _more_leading_axes),
    _alignment("alignment-8x64x80", shape=(8, 64, 80), padded=True, temperature=("array", 0.1), group="realistic"),
    _alignment("alignment-8x64x80-mean", shape=(8, 64, 80), temperature=("array", 0.3), reduction="mean", group="realistic"),
    _alignment("padding-holds-inf", shape=(2, 4, 6), padded=True, temperature=("array", 0.5), junk=-np.inf, group="edge"),
    Case("inf-costs-unmasked", "edge", _inf_costs),
    Case("ties", "edge", _ties),
    Case("tiny-temperature", "edge", _tiny_temperature),
    Case("no-source-positions", "edge", _no_sources),
    Case("single-target", "edge", _single_target),
]


def _bad(scores=None, alignment=None, mask=None, temperature_array=None, **options):
    """Bad input; a temperature in options is a Python number, temperature_array a NumPy array."""

    def build():
        inputs = {
            "scores": np.zeros((2, 3, 4)) if scores is None else scores,
            "alignment": np.zeros((2, 3), dtype=np.int64) if alignment is None else alignment,
            "mask": mask,
        }
        if temperature_array is not None:
            inputs["temperature"] = temperature_array
        return inputs, options

    return build


PARTLY_PADDED = np.array([[True, True, True, True], [True, True, True, False]])

ERROR_CASES = [
    ErrorCase("integer-scores", _bad(scores=np.zeros((2, 3, 4), dtype=np.int64)), TypeError, ("scores", "int64")),
    ErrorCase("rank-1-scores", _bad(scores=np.zeros(4), alignment=np.zeros((), dtype=np.int64)), ValueError, ("scores", "(4,)", "rank >= 2")),
    ErrorCase("float-alignment", _bad(alignment=np.zeros((2, 3))), TypeError, ("alignment", "integer")),
    ErrorCase("alignment-wrong-shape", _bad(alignment=np.zeros((2, 4), dtype=np.int64)), ValueError, ("alignment", "(2, 4)", "(2, 3)")),
    ErrorCase("alignment-too-large", _bad(alignment=np.array([[0, 1, 4], [3, 2, 1]])), ValueError, ("alignment", "4", "[0, 3]")),
    ErrorCase("alignment-negative", _bad(alignment=np.array([[0, 1, 2], [3, -1, 1]])), ValueError, ("alignment", "-1", "[0, 3]")),
    ErrorCase(
        "alignment-on-padding",
        _bad(alignment=np.array([[0, 3, 2], [1, 3, 0]]), mask=PARTLY_PADDED),
        ValueError,
        ("alignment[1, 1] = 3", "padded"),
    ),
    ErrorCase("mask-wrong-shape", _bad(mask=np.ones((2, 3), dtype=bool)), ValueError, ("mask", "(2, 3)", "(2, 4)")),
    ErrorCase("mask-not-boolean", _bad(mask=np.ones((2, 4), dtype=np.int64)), TypeError, ("mask", "int64", "boolean")),
    ErrorCase("zero-temperature", _bad(temperature=0.0), ValueError, ("temperature", "0.0", "> 0")),
    ErrorCase("negative-temperature-array", _bad(temperature_array=np.asarray(-1.0)), ValueError, ("temperature", "-1.0", "> 0")),
    ErrorCase("temperature-not-scalar", _bad(temperature_array=np.ones(2)), ValueError, ("temperature", "(2,)", "()")),
    ErrorCase("unknown-reduction", _bad(reduction="batchmean"), ValueError, ("reduction", "batchmean")),
]


def _read_by_loss(inputs, arg):
    """Mark the scores the loss reads (1), the padded target positions (0) and each row's gold position (-1).

    mask (..., N) applies to every source row of scores (..., M, N). A +inf
    cost at the gold position is outside the loss's domain (its gradient is
    undefined, and the spec and the mirrors differ there), so the poisoned
    cases leave gold positions alone.
    """
    scores = inputs["scores"]
    mask = inputs.get("mask")
    valid = np.ones(scores.shape, dtype=bool) if mask is None else np.broadcast_to(np.asarray(mask)[..., None, :], scores.shape)
    gold = np.arange(scores.shape[-1]) == np.asarray(inputs["alignment"])[..., None]
    return np.where(gold, -1, valid.astype(np.int8))


# The spec documents that padded target positions may contain inf or NaN and get zero gradient.
# At a valid position NaN propagates, and +inf is a cost that takes no probability. At the gold
# position +inf gives a +inf loss, which these cases avoid. temperature must be finite and > 0,
# so NaN and inf raise.
NONFINITE_POLICY = {"scores": IGNORED_WHERE_MASKED, "temperature": RAISE}
CASES += nonfinite_cases(
    {"scores": IGNORED_WHERE_MASKED}, build_of(CASES, "masked-array-temperature-none"), read_by_loss=_read_by_loss
)

ERROR_CASES += [
    ErrorCase("nan-temperature-array", _bad(temperature_array=np.asarray(np.nan)), ValueError, ("temperature", "nan", "finite value > 0")),
    ErrorCase("infinite-temperature", _bad(temperature=float("inf")), ValueError, ("temperature", "inf", "finite value > 0")),
    ErrorCase("infinite-temperature-array", _bad(temperature_array=np.asarray(np.inf)), ValueError, ("temperature", "inf", "finite value > 0")),
]
