"""RL policy-gradient losses on token tensors: PPO clipped objective, value loss, KL penalty, entropy."""

from __future__ import annotations

__all__: list[str] = []
