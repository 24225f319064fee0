"""The catalogue of spec losses and the facts the harness needs about each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class LossSpec:
    """One spec loss: its functions and which of its tensor arguments carry gradients.

    ``tensor_args`` lists every argument that takes an array, in call order.
    Those in ``differentiable`` get a gradient when they are floating point.
    Every other floating tensor argument must get zero gradient (or none)
    from every implementation.

    ``outputs`` names the arrays of a function that returns a tuple of
    same-shaped arrays (``gae`` returns advantages and returns). The harness
    stacks them on a new leading axis and compares each one as
    ``value:<name>``. It is empty for a function that returns one array.
    """

    name: str
    function: Callable
    gradient: Callable
    tensor_args: tuple[str, ...]
    differentiable: tuple[str, ...]
    summary: str
    outputs: tuple[str, ...] = ()

    @property
    def positional_args(self) -> tuple[str, ...]:
        return self.tensor_args[: self.positional_count]

    @property
    def positional_count(self) -> int:
        import inspect

        parameters = inspect.signature(self.function).parameters.values()
        return sum(1 for parameter in parameters if parameter.kind is parameter.POSITIONAL_OR_KEYWORD)


SPECS: dict[str, LossSpec] = {}


def register(spec: LossSpec) -> LossSpec:
    if spec.name in SPECS:
        raise ValueError(f"loss {spec.name!r} is registered twice")
    SPECS[spec.name] = spec
    return spec
