"""JAX mirrors of the spec's advantages losses."""

from __future__ import annotations

__all__: list[str] = []
