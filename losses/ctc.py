"""Connectionist temporal classification (CTC) loss."""

from __future__ import annotations

__all__: list[str] = []
