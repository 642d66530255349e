"""A fine-tuning run (STM's video stage, OSVOS's parent network, MSNet) stopped by Ctrl-C and
resumed from its ``last.ckpt`` continues exactly as the uninterrupted run: the same batches (clip
draws, frame skips, augmentations), the same losses (MSNet's dropout masks included) and the same
final weights, as pretraining's runs do (tests/test_train_resume.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import open_dict

from corrflow.data.action.synthetic_motion import write_moving_texture_videos
from corrflow.finetune import finetune
from tests.helpers.vos_synthetic import write_davis_tree
from tests.test_finetune import TINY as STM_TINY
from tests.test_finetune import compose_finetune_cfg
from tests.test_finetune_osvos import TINY as OSVOS_TINY
from tests.test_msnet import TINY as MSNET_TINY

pytestmark = pytest.mark.usefixtures("one_thread")


def digest(t: torch.Tensor) -> str:
    return hashlib.sha1(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


class StepRecorder(pl.Callback):
    """Per optimizer step: digests of what the step was given (every tensor of the batch) and its loss."""

    def __init__(self) -> None:
        self.steps: dict[int, dict] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        record = {k: digest(v) for k, v in sorted(batch.items()) if isinstance(v, torch.Tensor)}
        record["loss"] = float(outputs["loss"])
        self.steps[trainer.global_step] = record


RECORD = ["+callbacks.recorder._target_=tests.test_finetune_resume.StepRecorder", "callbacks.segmentation_images=null"]
STOP_AT = 2  # Ctrl-C during step 2: the run stops after it, mid-epoch
SIGINT = ["+callbacks.sigint._target_=tests.test_train_resume.SigintAt", f"+callbacks.sigint.step={STOP_AT}"]


def _stm(tmp_path: Path) -> list[str]:
    root = write_davis_tree(tmp_path / "davis", {"a": 8, "b": 6}, size=(32, 40))
    # 6 clips an epoch (3 steps of 2); the skip schedule ramps over the run (estimated from max_steps)
    return [f"data.root={root}", *STM_TINY, "experiment=stm", "model.backbone.arch=crw", "data.clips_per_video=3",
            "data.max_skip.end=4", "model.optimizer.lr=1e-3"]  # fmt: skip


def _osvos(tmp_path: Path) -> list[str]:
    root = write_davis_tree(tmp_path / "davis", {"a": 5, "b": 4}, size=(32, 40))
    return [f"data.root={root}", *OSVOS_TINY, "experiment=osvos_parent"]  # 9 frames: 4 steps an epoch, side weight over the run


def _msnet(tmp_path: Path) -> list[str]:
    root = write_moving_texture_videos(tmp_path / "motion", videos_per_class=5, n_frames=4, size=(32, 32), step=4)
    return [f"data.root={root}", *MSNET_TINY, "model.backbone.motion.radius=2"]  # 16 training videos: 4 steps an epoch


@pytest.mark.parametrize(("setup", "max_steps"), [(_stm, 5), (_osvos, 5), (_msnet, 6)], ids=["stm", "osvos_parent", "msnet"])
def test_an_interrupted_and_resumed_finetuning_run_equals_the_uninterrupted_one(tmp_path: Path, setup, max_steps: int) -> None:
    base = [*setup(tmp_path), *RECORD, f"trainer.max_steps={max_steps}"]

    def run(out: str, *extra: str) -> dict:
        cfg = compose_finetune_cfg(tmp_path, [*base, *extra])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / out)
        return finetune(cfg)[1]

    full = run("full")
    ref = next(cb for cb in full["trainer"].callbacks if isinstance(cb, StepRecorder)).steps
    assert sorted(ref) == list(range(1, max_steps + 1))
    assert len({r["frames"] for r in ref.values()}) == max_steps  # every step its own batch: the equalities below are not trivial

    stopped = run("stopped", *SIGINT)
    assert stopped["interrupted"] and stopped["trainer"].global_step == STOP_AT
    last = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    resumed = run("resumed", f"ckpt_path={last}")
    got = next(cb for cb in resumed["trainer"].callbacks if isinstance(cb, StepRecorder)).steps
    assert sorted(got) == list(range(STOP_AT + 1, max_steps + 1))
    for step in got:
        for key, value in ref[step].items():
            if key == "loss":
                assert got[step]["loss"] == pytest.approx(value, rel=1e-6, abs=1e-7), f"step {step}: another loss"
            else:
                assert got[step][key] == value, f"step {step}: another batch[{key!r}]"
    weights = resumed["model"].state_dict()
    for key, value in full["model"].state_dict().items():
        torch.testing.assert_close(weights[key], value, rtol=1e-6, atol=1e-7, msg=f"{key} differs after the resume")
