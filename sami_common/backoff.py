"""Jittered exponential backoff ("full jitter"): reconnect storms spread out instead of
arriving in lockstep after a control-plane restart."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base: float = 0.2
    cap: float = 10.0
    attempt: int = 0
    _rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2**self.attempt))
        self.attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0
