"""Tri-stage learning rate (the papers' recipe): linear warm-up, constant, exponential decay."""

from __future__ import annotations

import math


def tri_stage(step: int, total: int, stages=(0.1, 0.4, 0.5), final_scale: float = 0.05,
              initial_scale: float = 0.01) -> float:
    """Multiplier of the peak learning rate at ``step`` of ``total``."""
    warm, hold = int(stages[0] * total), int(stages[1] * total)
    decay = max(1, total - warm - hold)
    if step < warm:
        return initial_scale + (1.0 - initial_scale) * step / max(1, warm)
    if step < warm + hold:
        return 1.0
    frac = min(1.0, (step - warm - hold) / decay)
    return math.exp(math.log(final_scale) * frac)
