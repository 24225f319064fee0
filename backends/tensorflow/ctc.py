"""TensorFlow mirrors of the spec's ctc losses."""

from __future__ import annotations

__all__: list[str] = []

NATIVES: tuple = ()
