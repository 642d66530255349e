"""Schedules as functions of the training step, shared by the training modules and the data
modules that follow training (a resumed run recomputes them from its step)."""

from __future__ import annotations

__all__ = ["linear_schedule"]


def linear_schedule(step: int, total_steps: int, *, start: float, end: float) -> float:
    """Linear from ``start`` at step 0 to ``end`` at ``total_steps`` (clamped past the end)."""
    if total_steps <= 0:
        return end
    frac = min(max(step / total_steps, 0.0), 1.0)
    return start + (end - start) * frac
