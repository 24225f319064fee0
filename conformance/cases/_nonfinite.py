"""NaN and infinity policies of the losses, and the edge cases that check them.

Each case module declares ``NONFINITE_POLICY``: for every floating-point
tensor argument, what the spec does with a NaN or +inf in it. A policy is one
of the strings below, or a dict {"nan": policy, "inf": policy} when NaN and
+inf are treated differently.

- "propagate": the spec evaluates its formula on the value. NaN gives NaN in
  the affected outputs, and +inf gives the formula's limit (inf, NaN, or a
  finite value where a sigmoid saturates).
- "raise": the spec raises ValueError naming the argument and the value.
  The case module lists an ErrorCase for it.
- "ignored-where-masked": at positions the loss counts, the value propagates.
  At masked, padded or ignored positions it reaches neither the value nor any
  gradient.

``nonfinite_cases`` turns a policy into edge cases, so every mirror is
compared with the spec on the same poisoned inputs, gradients included.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from . import Case

PROPAGATE = "propagate"
RAISE = "raise"
IGNORED_WHERE_MASKED = "ignored-where-masked"
POLICIES = (PROPAGATE, RAISE, IGNORED_WHERE_MASKED)
# The non-finite values a policy covers, with the value each stands for.
KINDS = {"nan": np.nan, "inf": np.inf}


def policy_of(policy: dict, arg: str, kind: str) -> str:
    """Return the policy of one argument for one kind of non-finite value ("nan" or "inf")."""
    entry = policy[arg]
    return entry if isinstance(entry, str) else entry[kind]


def flags_along_leading_axes(flags: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Broadcast per-row flags (the leading axes of shape) over the trailing axes of shape."""
    flags = np.asarray(flags, dtype=bool)
    expanded = flags.reshape(flags.shape + (1,) * (len(shape) - flags.ndim))
    return np.broadcast_to(expanded, shape)


def counts_everything(inputs: dict, arg: str) -> np.ndarray:
    """Mark every element of the argument as read by the loss (a loss without a mask)."""
    return np.ones(np.shape(inputs[arg]), dtype=bool)


def read_where_mask(inputs: dict, arg: str) -> np.ndarray:
    """Mark the elements under a True flag of inputs["mask"] (all of them when the mask is None).

    The argument has the mask's shape, the mask's shape plus trailing axes
    (logits with a class axis), or the mask's shape without its last axis (one
    value per sequence, read when the sequence has a counted token).
    """
    mask = inputs.get("mask")
    shape = np.shape(inputs[arg])
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if shape == mask.shape[:-1] and shape != mask.shape:
        return mask.any(axis=-1)
    return flags_along_leading_axes(mask, shape)


def _poisoned(base: Callable, arg: str, value: float, counted: bool, read_by_loss: Callable) -> Callable:
    def build(rng):
        inputs, options = base(rng)
        inputs = dict(inputs)
        array = np.array(inputs[arg], dtype=np.float64, copy=True)
        flags = np.broadcast_to(np.asarray(read_by_loss(inputs, arg)).astype(np.int8), array.shape)
        positions = np.argwhere(flags == (1 if counted else 0))
        if len(positions) == 0:
            where = "counted" if counted else "masked"
            raise ValueError(f"the base case has no {where} element of {arg} to set to {value}; choose a base case that has one")
        # The middle position, so a poisoned element is not always the first row.
        index = tuple(int(i) for i in positions[len(positions) // 2])
        array[index] = value
        inputs[arg] = array
        return inputs, options

    return build


def nonfinite_cases(
    policy: dict,
    base: Callable,
    *,
    read_by_loss: Callable = counts_everything,
    bases: dict | None = None,
) -> list[Case]:
    """Return edge cases that set one element of each non-raising argument to NaN or +inf.

    base(rng) builds a valid (inputs, options) pair, and bases overrides it per
    argument (for an optional tensor that base leaves out). read_by_loss(inputs,
    arg) returns an array broadcastable to the argument's shape: True or 1 where
    the loss reads the element, False or 0 where it does not, and -1 where no
    case may put a non-finite value. A "propagate" or "ignored-where-masked" argument
    gets a case with the value at a read element. An "ignored-where-masked"
    argument also gets one with the value at an element the loss does not read.
    """
    bases = bases or {}
    cases = []
    for arg in policy:
        builder = bases.get(arg, base)
        for kind, value in KINDS.items():
            rule = policy_of(policy, arg, kind)
            if rule == RAISE:
                continue
            cases.append(Case(f"{kind}-in-{arg}", "edge", _poisoned(builder, arg, value, True, read_by_loss), nonfinite_limits=kind == "inf"))
            if rule == IGNORED_WHERE_MASKED:
                cases.append(Case(f"{kind}-in-masked-{arg}", "edge", _poisoned(builder, arg, value, False, read_by_loss)))
    return cases


def build_of(cases: list[Case], name: str) -> Callable:
    """Return the build function of the case with this name, to use as a base."""
    for case in cases:
        if case.name == name:
            return case.build
    raise KeyError(f"no case named {name!r}; expected one of {[case.name for case in cases]}")
