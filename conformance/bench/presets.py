"""Benchmark presets: which losses, shapes, dtypes and input distributions to time.

A preset is a list of ``BenchCase`` records and a repeat policy. The inputs
are built in the worker from a seeded generator, as float32 (float inputs)
or int64 arrays, then cast by the runtime to the case's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from ..cases.ctc_loss import _aligned_logits, _labels

ITEM_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Repeats:
    """How often a measurement repeats: warm-up calls, then at least ``minimum`` timed calls.

    Timed calls go on until ``seconds`` have passed or ``maximum`` calls were
    made, so a call of microseconds gets many repeats and a call of a second
    gets ``minimum``.
    """

    warmup: int = 1
    minimum: int = 5
    maximum: int = 200
    seconds: float = 1.0


@dataclass(frozen=True)
class BenchCase:
    """One input to time: a loss, its dimensions, a dtype and a distribution of values.

    ``dims`` are the shape parameters by their usual letters (N tokens, V
    vocabulary, B batch, T frames, C classes, S target length, P pairs).
    ``logits_elements`` is N x V for the cross-entropy cases, from which the
    report derives the logits' size and the minimal traffic N V (s_in + s_grad).
    ``gradient_elements`` is (N + V) H for linear cross-entropy: the two
    gradients it must write, its memory floor.

    A case can narrow what the preset measures, with the reason in ``note``:
    ``modes`` limits the modes, ``repeats`` replaces the preset's repeat policy,
    and ``time_forward=False`` times only forward plus backward (the output
    must then be a scalar, whose cotangent is 1).
    """

    loss: str
    dims: dict[str, int]
    dtype: str
    distribution: str
    build: Callable[[np.random.Generator], tuple[dict, dict]] = field(repr=False, compare=False)
    logits_elements: int | None = None
    gradient_elements: int | None = None
    modes: tuple[str, ...] | None = None
    repeats: Repeats | None = None
    time_forward: bool = True
    note: str = ""

    @property
    def label(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.dims.items())

    @property
    def name(self) -> str:
        return f"{self.loss} {self.label} {self.dtype} {self.distribution}"

    @property
    def logits_bytes(self) -> int | None:
        return None if self.logits_elements is None else self.logits_elements * ITEM_BYTES[self.dtype]

    @property
    def min_bytes(self) -> int | None:
        """Bytes a forward and backward pass must move at least: read the logits once, write their gradient once."""
        if self.loss != "cross_entropy" or self.logits_bytes is None:
            return None
        return 2 * self.logits_bytes

    @property
    def gradient_bytes(self) -> int | None:
        return None if self.gradient_elements is None else self.gradient_elements * ITEM_BYTES[self.dtype]


@dataclass(frozen=True)
class Skip:
    """Units a preset leaves out, matched by backend, implementation, mode and loss, with the measured reason."""

    backend: str
    implementation: str
    mode: str
    loss: str
    reason: str


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    cases: tuple[BenchCase, ...]
    repeats: Repeats = Repeats()
    skips: tuple[Skip, ...] = ()

    def skip_reason(self, backend: str, implementation: str, mode: str, loss: str) -> str | None:
        for skip in self.skips:
            if (skip.backend, skip.implementation, skip.mode, skip.loss) == (backend, implementation, mode, loss):
                return skip.reason
        return None


def _peaked_logits(rng: np.random.Generator, rows: int, vocab: int) -> np.ndarray:
    """Logits like a trained LM's, in float32: normal noise times 2 plus four strong candidates per row.

    The same shape of distribution as the conformance cases' peaked logits,
    drawn in float32 because a float64 draw of a billion logits would need 8 GB.
    """
    logits = rng.standard_normal((rows, vocab), dtype=np.float32)
    logits *= 2.0
    favourites = rng.integers(0, vocab, size=(rows, 4))
    boost = rng.uniform(4.0, 12.0, size=(rows, 4)).astype(np.float32)
    np.put_along_axis(logits, favourites, np.take_along_axis(logits, favourites, axis=1) + boost, axis=1)
    return logits


def cross_entropy_case(tokens: int, vocab: int, dtype: str, distribution: str) -> BenchCase:
    def build(rng):
        if distribution == "peaked":
            logits = _peaked_logits(rng, tokens, vocab)
        else:
            logits = rng.standard_normal((tokens, vocab), dtype=np.float32)
        targets = rng.integers(0, vocab, size=tokens)
        return {"logits": logits, "targets": targets, "weight": None}, {}

    return BenchCase("cross_entropy", {"N": tokens, "V": vocab}, dtype, distribution, build, tokens * vocab)


# A forward and backward pass of linear cross-entropy at the large CPU shape
# takes seconds (6 N H V = 1.6 TFLOP at N = 2048, H = 1024, V = 128256), so its
# cases are timed twice after the first call, and forward plus backward only:
# it is a training loss, and the TensorFlow mirror forms the gradients in its
# forward pass anyway.
LINEAR_REPEATS = Repeats(warmup=1, minimum=2, maximum=2, seconds=0.0)
LINEAR_NOTE = "forward plus backward only, two timed calls after the first one, because one call takes seconds"


def linear_cross_entropy_case(tokens: int, hidden: int, vocab: int, dtype: str, modes: tuple[str, ...] | None = None, note: str = "") -> BenchCase:
    def build(rng):
        hidden_states = rng.standard_normal((tokens, hidden), dtype=np.float32)
        # Scaled so that the logits have a standard deviation of about 2, like a trained head's.
        weight = rng.standard_normal((vocab, hidden), dtype=np.float32)
        weight *= 2.0 / np.sqrt(hidden)
        targets = rng.integers(0, vocab, size=tokens)
        return {"hidden": hidden_states, "weight": weight, "targets": targets, "bias": None}, {}

    return BenchCase(
        "linear_cross_entropy",
        {"N": tokens, "H": hidden, "V": vocab},
        dtype,
        "normal",
        build,
        logits_elements=tokens * vocab,
        gradient_elements=(tokens + vocab) * hidden,
        modes=modes,
        repeats=LINEAR_REPEATS,
        time_forward=False,
        note=f"{LINEAR_NOTE}; {note}" if note else LINEAR_NOTE,
    )


def bradley_terry_case(pairs: int, dtype: str) -> BenchCase:
    def build(rng):
        chosen = rng.standard_normal(pairs).astype(np.float32)
        rejected = rng.standard_normal(pairs).astype(np.float32)
        return {"chosen_rewards": chosen, "rejected_rewards": rejected, "margin": None}, {}

    return BenchCase("bradley_terry_loss", {"P": pairs}, dtype, "normal", build)


def dpo_case(pairs: int, dtype: str) -> BenchCase:
    def build(rng):
        # Summed log-probabilities of completions a few hundred tokens long.
        reference = -rng.uniform(150.0, 400.0, size=(2, pairs)).astype(np.float32)
        policy = reference + rng.normal(0.0, 4.0, size=(2, pairs)).astype(np.float32)
        inputs = {
            "policy_chosen_logps": policy[0],
            "policy_rejected_logps": policy[1],
            "reference_chosen_logps": reference[0],
            "reference_rejected_logps": reference[1],
        }
        return inputs, {}

    return BenchCase("dpo_loss", {"P": pairs}, dtype, "sequence log-probs", build)


def ctc_case(batch: int, frames: int, classes: int, target_length: int, dtype: str) -> BenchCase:
    def build(rng):
        targets = _labels(rng, batch, classes, 0, target_length)
        target_lengths = np.full(batch, target_length, dtype=np.int64)
        input_lengths = np.full(batch, frames, dtype=np.int64)
        logits = _aligned_logits(rng, targets, target_lengths, input_lengths, frames, classes, 0)
        inputs = {
            "logits": logits.astype(np.float32),
            "targets": targets.astype(np.int64),
            "input_lengths": input_lengths,
            "target_lengths": target_lengths,
        }
        return inputs, {}

    return BenchCase("ctc_loss", {"B": batch, "T": frames, "C": classes, "S": target_length}, dtype, "aligned", build)


def _pairwise_cases(dtype: str, sizes: tuple[int, ...]) -> tuple[BenchCase, ...]:
    # One pair shows the per-call overhead; the larger sizes add the cost per pair.
    return tuple(bradley_terry_case(size, dtype) for size in sizes) + tuple(dpo_case(size, dtype) for size in sizes)


TORCH_CTC_COMPILED = Skip(
    "torch",
    "lossparity",
    "compiled",
    "ctc_loss",
    "torch.compile unrolls the mirror's Python loop over T: at T = 256, C = 32 the first calls took 221 s "
    "(forward) and 244 s (forward and backward) with torch 2.13 on 2 CPU cores, and the time grows with T",
)

CPU = Preset(
    "cpu",
    "float32 on a small CPU (2 cores, 24 GiB): cross-entropy up to N = 1024 x V = 256000, "
    "Bradley-Terry and DPO on 1 pair (the per-call overhead) and 4096 pairs, CTC at B = 8, T = 256, "
    "linear cross-entropy at N = 1024, H = 2048, V = 32000 and N = 2048, H = 1024, V = 128256",
    (
        cross_entropy_case(2048, 32000, "float32", "peaked"),
        cross_entropy_case(1024, 32000, "float32", "peaked"),
        # Normal logits at the smallest shape only, to show whether the distribution matters, at little cost.
        cross_entropy_case(1024, 32000, "float32", "normal"),
        cross_entropy_case(1024, 128256, "float32", "peaked"),
        cross_entropy_case(1024, 151936, "float32", "peaked"),
        cross_entropy_case(1024, 256000, "float32", "peaked"),
        *_pairwise_cases("float32", (1, 4096)),
        ctc_case(8, 256, 32, 64, "float32"),
        ctc_case(8, 256, 256, 64, "float32"),
        linear_cross_entropy_case(1024, 2048, 32000, "float32"),
        linear_cross_entropy_case(
            2048,
            1024,
            128256,
            "float32",
            modes=("eager",),
            note="eager only: one forward and backward pass takes about 15 s on 2 cores, and both modes of six "
            "implementations would add 12 minutes to the run; the compiled modes are measured at N = 1024, H = 2048, V = 32000",
        ),
    ),
    skips=(TORCH_CTC_COMPILED,),
)

GPU = Preset(
    "gpu",
    "one large GPU: bfloat16 cross-entropy up to N = 32768 x V = 256000 and a float32 variant, "
    "pairwise losses up to 65536 pairs, CTC at B = 32, T = 512, bfloat16 linear cross-entropy at "
    "(H, V) = (2304, 256000), (4096, 128256) and (3584, 152064) for N = 8192 and 32768",
    (
        *(cross_entropy_case(tokens, vocab, "bfloat16", "peaked") for tokens in (4096, 16384) for vocab in (32000, 128256, 151936, 256000)),
        cross_entropy_case(32768, 128256, "bfloat16", "peaked"),
        cross_entropy_case(32768, 256000, "bfloat16", "peaked"),
        cross_entropy_case(16384, 128256, "bfloat16", "normal"),
        cross_entropy_case(8192, 128256, "float32", "peaked"),
        *_pairwise_cases("float32", (1, 4096, 65536)),
        ctc_case(32, 512, 256, 128, "float32"),
        *(linear_cross_entropy_case(tokens, hidden, vocab, "bfloat16") for tokens in (8192, 32768) for hidden, vocab in ((2304, 256000), (4096, 128256), (3584, 152064))),
    ),
    Repeats(warmup=2, minimum=10, maximum=200, seconds=0.5),
    skips=(TORCH_CTC_COMPILED,),
)

# A bounded subset of GPU for conformance/gpu_check.sh, which must run
# conformance and bench in 8 minutes on one GPU. torch.compile takes seconds per
# graph and shape, so the largest cross-entropy case runs eager only. The fewer
# repeats keep each measurement near a second.
GPU_CHECK = Preset(
    "gpu-check",
    "a bounded subset of the gpu preset: bfloat16 cross-entropy at N = 4096 x V = 128256 and, eager only, "
    "N = 16384 x V = 128256, bfloat16 linear cross-entropy at N = 8192, H = 4096, V = 128256, and "
    "Bradley-Terry at 1 and 65536 pairs",
    (
        cross_entropy_case(4096, 128256, "bfloat16", "peaked"),
        replace(cross_entropy_case(16384, 128256, "bfloat16", "peaked"), modes=("eager",), note="eager only, to bound the run's compile time"),
        linear_cross_entropy_case(8192, 4096, 128256, "bfloat16"),
        bradley_terry_case(1, "float32"),
        bradley_terry_case(65536, "float32"),
    ),
    Repeats(warmup=2, minimum=5, maximum=50, seconds=0.25),
)

# Tiny shapes for the tests: every code path of the benchmark in seconds.
SMOKE = Preset(
    "smoke",
    "tiny shapes that exercise every part of the benchmark in seconds; the times mean nothing",
    (
        cross_entropy_case(8, 50, "float32", "peaked"),
        cross_entropy_case(8, 50, "float32", "normal"),
        *_pairwise_cases("float32", (16,)),
        ctc_case(2, 12, 5, 3, "float32"),
        linear_cross_entropy_case(16, 8, 40, "float32"),
    ),
    Repeats(warmup=1, minimum=3, maximum=3, seconds=0.0),
)

PRESETS = {preset.name: preset for preset in (CPU, GPU, GPU_CHECK, SMOKE)}
