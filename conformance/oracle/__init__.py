"""An arbitrary-precision oracle for the float64 spec.

``formulas`` evaluates every spec loss with mpmath at 50 significant digits,
written from the loss catalog's formulas without the spec's code. ``run``
compares the spec's values and gradients with it on the small and edge
cases and states the error in float64 units in the last place (ULPs).
"""

from .run import BOUND_REASONS, BOUNDS, KNOWN_FINDINGS, run_oracle, worst_by_loss

__all__ = ["BOUNDS", "BOUND_REASONS", "KNOWN_FINDINGS", "run_oracle", "worst_by_loss"]
