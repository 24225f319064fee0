"""Cases, implementations and known failures of the sharded checks, shared by the parent and the workers.

Every case is small (N <= 64 rows, V <= 300 classes), so that world size 8
runs in seconds on two CPU cores, and several have a vocabulary that no world
size above 1 divides. The inputs depend only on the case and the seed, so
the parent and every worker process build the same arrays.
"""

from __future__ import annotations

import fnmatch
import zlib
from dataclasses import dataclass

import numpy as np

import losses

from ..dtypes import round_inputs, round_to

LOSSES = ("cross_entropy", "linear_cross_entropy")
BACKENDS = ("torch", "jax")
DTYPES = ("float32", "bfloat16", "float64")
DEFAULT_DTYPES = ("float32", "bfloat16")
MAX_JAX_CPU_DEVICES = 8
GROUP = "sharded"


@dataclass(frozen=True)
class ShardedCase:
    """One input of a sharded check: shapes, options and the pattern of targets.

    targets: "uniform" draws every target from all V classes. "first-eighth"
    draws the counted targets from the first ceil(V / 8) classes only. So at
    world size 2 to 8 every counted target lies in rank 0's shard, and the
    other ranks own none. "all-ignored" sets every target to ignore_index.
    ignored is the fraction of rows whose target is ignore_index. The first of
    them gets -inf logits (cross-entropy) or an inf hidden state (linear
    cross-entropy), which must reach neither the value nor any gradient.
    """

    name: str
    loss: str
    rows: int
    vocab: int
    description: str
    hidden: int = 0
    options: tuple = ()
    weights: bool = False
    bias: bool = False
    targets: str = "uniform"
    ignored: float = 0.0
    logit_offset: float = 0.0

    @property
    def option_dict(self) -> dict:
        return dict(self.options)


def _ce(name, rows, vocab, description, **fields) -> ShardedCase:
    return ShardedCase(name=name, loss="cross_entropy", rows=rows, vocab=vocab, description=description, **fields)


def _linear(name, rows, vocab, hidden, description, **fields) -> ShardedCase:
    return ShardedCase(name=name, loss="linear_cross_entropy", rows=rows, vocab=vocab, hidden=hidden, description=description, **fields)


CASES = (
    _ce("mean-v37", 16, 37, "reduction mean; V = 37 divides by no world size above 1"),
    _ce("sum-v64", 24, 64, "reduction sum; V = 64 divides by 2, 4 and 8", options=(("reduction", "sum"),)),
    _ce("none-v50", 12, 50, "reduction none with a random cotangent", options=(("reduction", "none"),)),
    _ce("offset-v40", 16, 40, "logits offset by +60, so a shard that shifts by its own maximum gets a wrong normaliser", logit_offset=60.0),
    _ce("class-weights-v45", 20, 45, "class weights, weighted-mean denominator sum of w_y", weights=True),
    _ce(
        "class-weights-ignored-v45",
        20,
        45,
        "class weights with ignore_index -100 on a quarter of the rows",
        weights=True,
        ignored=0.25,
    ),
    _ce(
        "ignored-v48",
        32,
        48,
        "ignore_index -100 on a quarter of the rows (one of them -inf); counted targets only in the first eighth of the "
        "vocabulary, so some ranks own no counted target and the others read targets from another rank's shard",
        targets="first-eighth",
        ignored=0.25,
    ),
    _ce("ignore-index-3-v41", 16, 41, "ignore_index = 3, a valid class id", options=(("ignore_index", 3),), ignored=0.25),
    _ce("label-smoothing-v37", 16, 37, "label_smoothing 0.1", options=(("label_smoothing", 0.1),)),
    _ce("z-loss-v56", 16, 56, "z_loss 1e-2 (PaLM uses 1e-4; larger here so the term is visible)", options=(("z_loss", 1e-2),)),
    _ce(
        "all-options-v53",
        24,
        53,
        "class weights, ignore_index, label_smoothing 0.2 and z_loss 1e-3 together",
        options=(("label_smoothing", 0.2), ("z_loss", 1e-3)),
        weights=True,
        ignored=0.25,
    ),
    _ce(
        "all-options-sum-v64",
        16,
        64,
        "class weights, ignore_index, label_smoothing 0.1 and z_loss 1e-3 with reduction sum",
        options=(("label_smoothing", 0.1), ("z_loss", 1e-3), ("reduction", "sum")),
        weights=True,
        ignored=0.25,
    ),
    _ce("all-ignored-v40", 8, 40, "every target ignored: the mean of nothing is 0 with zero gradient", targets="all-ignored"),
    _ce("vocab-smaller-than-world-v5", 8, 5, "V = 5, so at world size 8 three ranks hold no class at all"),
    _ce("wide-v300", 64, 300, "N = 64, V = 300"),
    _linear("linear-mean-v37", 16, 37, 8, "reduction mean; V = 37 divides by no world size above 1"),
    _linear("linear-sum-bias-v64", 16, 64, 8, "reduction sum with a bias", options=(("reduction", "sum"),), bias=True),
    _linear("linear-none-v50", 12, 50, 8, "reduction none with a random cotangent", options=(("reduction", "none"),)),
    _linear(
        "linear-ignored-v48",
        24,
        48,
        8,
        "ignore_index on a quarter of the rows (one with inf hidden state); counted targets only in the first eighth",
        targets="first-eighth",
        ignored=0.25,
    ),
    _linear(
        "linear-all-options-v53",
        16,
        53,
        8,
        "bias, ignore_index, label_smoothing 0.1 and z_loss 1e-3",
        options=(("label_smoothing", 0.1), ("z_loss", 1e-3)),
        bias=True,
        ignored=0.25,
    ),
    _linear("linear-all-ignored-v40", 8, 40, 8, "every target ignored", targets="all-ignored"),
)

CASE_NAMES = tuple(case.name for case in CASES)


def cases_for(loss: str) -> list[ShardedCase]:
    return [case for case in CASES if case.loss == loss]


def case_named(name: str) -> ShardedCase:
    for case in CASES:
        if case.name == name:
            return case
    raise KeyError(f"sharded case {name!r} not found; expected one of {', '.join(CASE_NAMES)}")


def _targets(case: ShardedCase, rng: np.random.Generator, ignore_index: int) -> np.ndarray:
    if case.targets == "all-ignored":
        return np.full(case.rows, ignore_index, dtype=np.int64)
    high = case.vocab if case.targets == "uniform" else -(-case.vocab // 8)
    targets = rng.integers(0, high, size=case.rows)
    if ignore_index >= 0:
        # A valid class id used as ignore_index: no counted row may have it as target.
        targets = np.where(targets == ignore_index, (ignore_index + 1) % case.vocab, targets)
    ignored = rng.permutation(case.rows)[: int(round(case.ignored * case.rows))]
    targets[ignored] = ignore_index
    return targets.astype(np.int64)


def generate(case: ShardedCase, seed: int) -> tuple[dict, dict]:
    """Return the float64 inputs, named as the spec's arguments, and the options of a case."""
    rng = np.random.default_rng([seed, zlib.crc32(case.name.encode())])
    options = case.option_dict
    ignore_index = options.get("ignore_index", -100)
    targets = _targets(case, rng, ignore_index)
    ignored_rows = np.flatnonzero(targets == ignore_index)

    if case.loss == "cross_entropy":
        logits = 3.0 * rng.standard_normal((case.rows, case.vocab)) + case.logit_offset
        if ignored_rows.size:
            logits[ignored_rows[0]] = -np.inf
        inputs = {"logits": logits, "targets": targets, "weight": None}
        if case.weights:
            inputs["weight"] = rng.uniform(0.2, 2.0, case.vocab)
        return inputs, options

    hidden = rng.standard_normal((case.rows, case.hidden))
    if ignored_rows.size:
        hidden[ignored_rows[0]] = np.inf
    weight = rng.standard_normal((case.vocab, case.hidden)) / np.sqrt(case.hidden) * 2.0
    inputs = {"hidden": hidden, "weight": weight, "targets": targets, "bias": None}
    if case.bias:
        inputs["bias"] = rng.standard_normal(case.vocab)
    return inputs, options


@dataclass
class Prepared:
    """A case's inputs rounded to the tested dtype (as float64), its options and the cotangent of its value."""

    inputs: dict
    options: dict
    cotangent: np.ndarray


def prepare(case: ShardedCase, dtype: str, seed: int) -> Prepared:
    inputs, options = generate(case, seed)
    inputs = round_inputs(inputs, dtype)
    if options.get("reduction", "mean") == "none":
        rng = np.random.default_rng([seed, zlib.crc32(case.name.encode()), 1])
        cotangent = round_to(rng.standard_normal(case.rows), dtype)
    else:
        cotangent = np.asarray(1.0)
    return Prepared(inputs, options, cotangent)


def reference(case: ShardedCase, prepared: Prepared) -> tuple[np.ndarray, dict]:
    """Return the float64 spec's value and gradients on the prepared (rounded) inputs."""
    spec = losses.SPECS[case.loss]
    value = np.asarray(spec.function(**prepared.inputs, **prepared.options))
    gradients = spec.gradient(**prepared.inputs, **prepared.options, cotangent=prepared.cotangent)
    return value, gradients


# Implementations ------------------------------------------------------------


@dataclass(frozen=True)
class ShardedImplementation:
    """One sharded implementation: its backend, loss, name, kind ("mirror" or "native") and the options it lacks."""

    backend: str
    loss: str
    name: str
    kind: str
    mode: str
    lacks: tuple[str, ...] = ()
    needs_divisible_vocab: bool = False
    notes: str = ""
    differences: tuple = ()  # (name, description, applies(case, prepared)) of each documented difference.

    def difference(self, case: ShardedCase, prepared: Prepared) -> tuple[str, str] | None:
        """Return (name, description) of the first documented difference that applies to the case, or None."""
        for name, description, applies in self.differences:
            if applies(case, prepared):
                return name, description
        return None

    def unsupported(self, case: ShardedCase, prepared: Prepared, world_size: int) -> str | None:
        """Return why this implementation cannot express the case at this world size, or None."""
        options = prepared.options
        ignore_index = options.get("ignore_index", -100)
        present = {
            "weight": prepared.inputs.get("weight") is not None and case.loss == "cross_entropy",
            "label_smoothing": options.get("label_smoothing", 0.0) != 0.0,
            "z_loss": options.get("z_loss", 0.0) != 0.0,
            "ignore_index": bool(np.any(prepared.inputs["targets"] == ignore_index)),
        }
        for option in self.lacks:
            if present.get(option):
                return LACK_REASONS.get((self.name, option), f"the built-in has no {option} option")
        if self.needs_divisible_vocab and case.vocab % world_size:
            return (
                f"NamedSharding needs the sharded axis to divide by the mesh size (jax 0.10.2 raises IndivisibleError); "
                f"V = {case.vocab} does not divide by {world_size}"
            )
        return None


def _mean_of_nothing(case: ShardedCase, prepared: Prepared) -> bool:
    """True for a mean whose denominator, the sum of w_y over counted rows, is zero."""
    if prepared.options.get("reduction", "mean") != "mean":
        return False
    counted = prepared.inputs["targets"] != prepared.options.get("ignore_index", -100)
    weight = prepared.inputs.get("weight") if case.loss == "cross_entropy" else None
    if weight is None:
        return not counted.any()
    return float(np.sum(weight[prepared.inputs["targets"][counted]])) == 0.0


MEAN_OF_NOTHING = (
    "mean-of-nothing-is-nan",
    "PyTorch divides by a zero total weight and returns NaN when every target is ignored; the spec returns 0.",
    _mean_of_nothing,
)

def _nonfinite_ignored_rows(case: ShardedCase, prepared: Prepared) -> bool:
    """True when a row whose target is ignore_index has a non-finite logit."""
    if case.loss != "cross_entropy":
        return False
    ignored = prepared.inputs["targets"] == prepared.options.get("ignore_index", -100)
    return bool(np.any(~np.isfinite(prepared.inputs["logits"][ignored])))


NONFINITE_IGNORED_ROWS = (
    "nonfinite-logits-in-ignored-rows",
    "loss_parallel computes log_softmax over ignored rows too, so -inf logits there give NaN in the gradient; "
    "the spec ignores those rows completely.",
    _nonfinite_ignored_rows,
)

LOSS_PARALLEL = "torch.distributed.tensor.parallel.loss_parallel"
OPTAX_NAMED = "optax.softmax_cross_entropy_with_integer_labels+NamedSharding"
OPTAX_LINEAR_NAMED = "jnp.matmul+optax.softmax_cross_entropy_with_integer_labels+NamedSharding"
MIRROR = "lossparity.vocab_parallel"

LACK_REASONS = {
    (LOSS_PARALLEL, "label_smoothing"): (
        "loss_parallel's docstring (torch 2.13) says label_smoothing is currently not supported; "
        "the call raises a RuntimeError about mixed torch.Tensor and DTensor"
    ),
    (LOSS_PARALLEL, "z_loss"): "torch.nn.functional.cross_entropy has no z_loss option",
    (OPTAX_NAMED, "ignore_index"): "the built-in has no ignore_index (mask the per-example losses instead)",
    (OPTAX_LINEAR_NAMED, "ignore_index"): "the built-in has no ignore_index (mask the per-example losses instead)",
}

IMPLEMENTATIONS = (
    ShardedImplementation("torch", "cross_entropy", MIRROR, "mirror", "eager", notes="torch.distributed all_reduce over gloo, own autograd function"),
    ShardedImplementation(
        "torch",
        "cross_entropy",
        LOSS_PARALLEL,
        "native",
        "eager",
        lacks=("label_smoothing", "z_loss"),
        notes="F.cross_entropy on a DTensor with placement Shard(1), built with DTensor.from_local (torch.chunk split)",
        differences=(MEAN_OF_NOTHING, NONFINITE_IGNORED_ROWS),
    ),
    ShardedImplementation("torch", "linear_cross_entropy", MIRROR, "mirror", "eager", notes="weight and bias sharded over rows, hidden replicated"),
    ShardedImplementation("jax", "cross_entropy", MIRROR, "mirror", "compiled", notes="jax.shard_map with lax.pmax and lax.psum, custom VJP, under jax.jit"),
    ShardedImplementation(
        "jax",
        "cross_entropy",
        OPTAX_NAMED,
        "native",
        "compiled",
        lacks=("weight", "label_smoothing", "z_loss", "ignore_index"),
        needs_divisible_vocab=True,
        notes="jax.jit with the logits placed by NamedSharding(mesh, P(None, 'v')); XLA's SPMD partitioner chooses the collectives",
    ),
    ShardedImplementation("jax", "linear_cross_entropy", MIRROR, "mirror", "compiled", notes="weight and bias split over rows by jax.shard_map"),
    ShardedImplementation(
        "jax",
        "linear_cross_entropy",
        OPTAX_LINEAR_NAMED,
        "native",
        "compiled",
        lacks=("label_smoothing", "z_loss", "ignore_index"),
        needs_divisible_vocab=True,
        notes="jax.jit with the weight placed by NamedSharding(mesh, P('v', None)) and the bias by P('v')",
    ),
)


def implementations_for(backend: str, selected_losses) -> list[ShardedImplementation]:
    return [impl for impl in IMPLEMENTATIONS if impl.backend == backend and impl.loss in selected_losses]


# Known failures -------------------------------------------------------------


@dataclass(frozen=True)
class KnownFailure:
    """A measured disagreement with a public reason: matching results become xfail (or xpass when they pass).

    pattern matches the result id backend/loss/implementation/dtype/w<world size>/case/check;
    applies(case, world_size), when given, must also hold.
    """

    pattern: str
    reason: str
    link: str = ""
    applies: object = None


def _has_empty_shard(case: ShardedCase, world_size) -> bool:
    """True when the torch.chunk split of the case's V columns over world_size ranks leaves a rank no column."""
    if not isinstance(world_size, int):
        return False
    width = -(-case.vocab // world_size)
    return width * (world_size - 1) >= case.vocab


LOSS_PARALLEL_SOURCE = "https://pytorch.org/docs/stable/_modules/torch/distributed/tensor/parallel/loss.html"

KNOWN_FAILURES: tuple[KnownFailure, ...] = (
    KnownFailure(
        pattern=f"torch/cross_entropy/{LOSS_PARALLEL}/*/*/class-weights-ignored-*",
        reason=(
            "with class weights, loss_parallel's backward (torch 2.13, _nll_loss_and_log_softmax_backward in "
            "torch/distributed/tensor/parallel/loss.py) gathers the weight at the raw targets before it masks ignored "
            "rows, so the default ignore_index -100 raises RuntimeError: index -100 is out of bounds"
        ),
        link=LOSS_PARALLEL_SOURCE,
    ),
    KnownFailure(
        pattern=f"torch/cross_entropy/{LOSS_PARALLEL}/*",
        reason=(
            "loss_parallel (torch 2.13) raises on a rank whose shard of the class axis is empty, which the torch.chunk "
            "split of DTensor Shard(1) gives when V = 5 is split over 4 or 8 ranks or V = 41 over 8: "
            "RuntimeError: index 0 is out of bounds for dimension 1 with size 0, and its peers then lose their connection"
        ),
        link=LOSS_PARALLEL_SOURCE,
        applies=lambda case, world_size: _has_empty_shard(case, world_size),
    ),
)


def known_failure(result_id: str, case: ShardedCase | None = None, world_size=None) -> KnownFailure | None:
    for entry in KNOWN_FAILURES:
        if not fnmatch.fnmatchcase(result_id, entry.pattern):
            continue
        if entry.applies is not None and (case is None or not entry.applies(case, world_size)):
            continue
        return entry
    return None
