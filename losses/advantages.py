"""Advantage estimators for RL fine-tuning: GAE and GRPO group-normalised rewards. Values only, no gradient."""

from __future__ import annotations

__all__: list[str] = []
