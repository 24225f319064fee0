"""Preference-optimisation losses on per-sequence log-probabilities."""

__all__: list[str] = []
