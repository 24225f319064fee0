"""PyTorch mirrors of the spec's policy losses."""

from __future__ import annotations

__all__: list[str] = []
