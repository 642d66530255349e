import pickle

import pytest

from corrflow.lit.schedules import SampleMilestoneLR, step_lr_factor
from corrflow.utils.schedules import linear_schedule

MILESTONES = [400_000, 600_000, 800_000, 1_000_000]


@pytest.mark.parametrize(
    "step, factor",
    # batch 6: samples seen before the step = 6 * step; "<= 400000" keeps the base rate (the code)
    [(0, 1.0), (66_666, 1.0), (66_667, 0.5), (100_000, 0.5), (100_001, 0.25), (166_666, 0.125), (166_667, 0.0625)],
)
def test_lr_halves_after_each_milestone_in_samples(step, factor):
    assert step_lr_factor(step, samples_per_step=6, milestones=MILESTONES) == factor


def test_samples_per_step_scales_with_devices():
    # 4 GPUs x batch 6: the first halving comes 4 times sooner in steps
    assert step_lr_factor(400_000 // 24 + 1, samples_per_step=24, milestones=MILESTONES) == 0.5
    assert step_lr_factor(400_000 // 24, samples_per_step=24, milestones=MILESTONES) == 1.0


def test_scheduled_sampling_end_points():
    assert linear_schedule(0, 1000, start=0.9, end=0.6) == pytest.approx(0.9)
    assert linear_schedule(500, 1000, start=0.9, end=0.6) == pytest.approx(0.75)
    assert linear_schedule(1000, 1000, start=0.9, end=0.6) == pytest.approx(0.6)
    assert linear_schedule(5000, 1000, start=0.9, end=0.6) == pytest.approx(0.6)


def test_lr_function_pickles_for_checkpoints():
    fn = pickle.loads(pickle.dumps(SampleMilestoneLR(samples_per_step=6, milestones=MILESTONES)))
    assert fn(400_000 // 6 + 1) == 0.5
