"""Cases for ranking_loss_pooled: the cases of ranking_loss.

The masked cases, with different numbers of valid completions per prompt,
are where the pooled mean and the per-prompt mean differ.
"""

from __future__ import annotations

from .ranking_loss import CASES, ERROR_CASES, NONFINITE_POLICY

__all__ = ["CASES", "ERROR_CASES", "NONFINITE_POLICY"]
