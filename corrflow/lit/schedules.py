"""Learning-rate schedules counted in training samples, so that they survive resuming (schedules
of the step alone, as :func:`corrflow.utils.schedules.linear_schedule`, live with the utilities)."""

from __future__ import annotations

from collections.abc import Sequence


def step_lr_factor(step: int, *, samples_per_step: int, milestones: Sequence[int], gamma: float = 0.5) -> float:
    """LR multiplier at optimizer step ``step``: ``gamma`` per milestone passed.

    Milestones are in training samples; a milestone m is passed once the samples seen *before* this
    step exceed m, as the original code does (``iteration <= 400000`` keeps the base rate).
    """
    seen = step * samples_per_step
    return gamma ** sum(seen > m for m in milestones)


class SampleMilestoneLR:
    """A picklable LambdaLR function for :func:`step_lr_factor` (checkpoints hold the scheduler)."""

    def __init__(self, *, samples_per_step: int, milestones: Sequence[int], gamma: float = 0.5) -> None:
        self.samples_per_step, self.milestones, self.gamma = samples_per_step, list(milestones), gamma

    def __call__(self, step: int) -> float:
        return step_lr_factor(step, samples_per_step=self.samples_per_step, milestones=self.milestones, gamma=self.gamma)
