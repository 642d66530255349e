"""The per-step draw stream of pretraining: a function of (seed, rank, global step) alone, so DDP
ranks draw differently and a resumed run draws what the uninterrupted one did."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from corrflow.lit.corrflow_module import CorrFlowLitModule


class _Probe:
    """``step_seed`` read off a stand-in holding only what it reads: hparams.seed, the rank and the step."""

    def __init__(self, seed: int, rank: int, step: int) -> None:
        self.hparams = SimpleNamespace(seed=seed)
        self.global_rank, self.global_step = rank, step

    step_seed = CorrFlowLitModule.step_seed


def test_step_seed_differs_across_ranks_and_steps_not_across_resumes() -> None:
    seeds = {(rank, step): _Probe(12345, rank, step).step_seed() for rank in range(4) for step in range(50)}
    assert len(set(seeds.values())) == len(seeds)  # every (rank, step) its own stream
    # a "resumed" module (a new object at the same seed, rank and step) draws the same seeds
    for (rank, step), value in seeds.items():
        assert _Probe(12345, rank, step).step_seed() == value
    assert _Probe(1, 0, 7).step_seed() != _Probe(2, 0, 7).step_seed()  # the run's seed matters
    assert _Probe(None, 0, 7).step_seed() == _Probe(0, 0, 7).step_seed()  # no seed: 0


@pytest.mark.parametrize("broken", ["ignores-rank", "ignores-step"])
def test_the_check_catches_a_stream_that_ignores_rank_or_step(broken: str) -> None:
    """The property above fails for a stream without the rank or the step (the check can fail)."""
    from corrflow.utils.seeding import derive_seed

    def bad(probe: _Probe) -> int:
        keys = (probe.global_step,) if broken == "ignores-rank" else (probe.global_rank,)
        return derive_seed(probe.hparams.seed or 0, "train-step", *keys)

    seeds = [bad(_Probe(12345, rank, step)) for rank in range(4) for step in range(50)]
    assert len(set(seeds)) < len(seeds)
