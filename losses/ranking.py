"""Listwise and pairwise ranking losses and sequence alignment."""

__all__: list[str] = []
