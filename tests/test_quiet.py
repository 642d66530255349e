"""Quiet runs and tests: the project's own code raises no deprecation (and the tests fail when it
does); the tools silence exactly the known third-party lines."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from corrflow.utils.io import read_indexed_png, write_indexed_png
from corrflow.utils.palette import DAVIS_PALETTE

REPO = Path(__file__).resolve().parents[1]


def _warn_from(module: str) -> None:
    """A DeprecationWarning raised by code of ``module`` (what warnings attributes it to)."""
    code = compile("import warnings\nwarnings.warn('old API', DeprecationWarning)\n", f"<{module}>", "exec")
    exec(code, {"__name__": module})


def test_a_deprecation_warning_from_corrflow_fails_the_test() -> None:
    """pyproject.toml's filterwarnings turns a DeprecationWarning raised from a corrflow module
    into an error (so a test meeting one fails), and leaves everyone else's a warning."""
    with pytest.raises(DeprecationWarning, match="old API"):
        _warn_from("corrflow.utils.something")
    with pytest.raises(DeprecationWarning):
        _warn_from("corrflow")
    with pytest.warns(DeprecationWarning):
        _warn_from("some_library.module")
    with pytest.warns(DeprecationWarning):
        _warn_from("corrflowish")  # not ours: only the corrflow package and its modules


def test_writing_a_palette_png_raises_no_warning(tmp_path: Path) -> None:
    mask = np.zeros((6, 8), np.uint8)
    mask[1:3, 2:5] = 2
    mask[4:, :2] = 255
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's deprecated mode= argument was one
        write_indexed_png(tmp_path / "m.png", mask)
    np.testing.assert_array_equal(read_indexed_png(tmp_path / "m.png"), mask)
    from PIL import Image

    with Image.open(tmp_path / "m.png") as im:
        assert im.mode == "P" and bytes(im.getpalette()[:30]) == DAVIS_PALETTE[:30]


def test_training_curves_without_some_series_raise_no_legend_warning(tmp_path: Path) -> None:
    """A run without per-recursion losses or a scheduled-sampling column leaves those panels
    without labelled lines: no legend there, and no matplotlib warning about it."""
    from corrflow.utils.plots import plot_training_curves

    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,step,train/loss_step\n0,0,4.5\n0,1,3.5\n0,2,2.5\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plot_training_curves(csv, tmp_path / "curves.png").is_file()


# -- the tools' silencing of known third-party lines ------------------------------------------

_LIGHTNING_RUN = """
import os, sys, warnings
warnings.simplefilter("default")
if sys.argv[2] == "quiet":
    from corrflow.utils.quiet import quiet_third_party
    quiet_third_party()
import torch
import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(2, 1)
        self.frozen = torch.nn.BatchNorm1d(2).eval()  # as model.backbone.freeze_bn keeps it
    def train(self, mode=True):
        super().train(mode)
        self.frozen.eval()
        return self
    def training_step(self, batch, batch_idx):
        loss = self.w(batch[0]).pow(2).mean()
        self.log("loss", loss)
        return loss
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

pl.seed_everything(7)
out = sys.argv[1]
os.makedirs(out + "/checkpoints", exist_ok=True)
open(out + "/checkpoints/earlier.ckpt", "w").close()  # as a resumed run's own folder
data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=2)
trainer = pl.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=out,
                     callbacks=[ModelCheckpoint(dirpath=out + "/checkpoints", every_n_train_steps=1)])
trainer.fit(Tiny(), data)
trainer.save_checkpoint(out + "/checkpoints/x.ckpt")
warnings.warn("an unrelated warning")
print("DONE", flush=True)
"""

KNOWN = ("Tip: For seamless cloud logging", "exists and is not empty", "isinstance(treespec, LeafSpec)` is deprecated",
         "`weights_only` was not set", "Seed set to 7", "TPU available: False, using: 0 TPU cores",
         "module(s) in eval mode at the start of training")  # fmt: skip
KNOWN_WITHOUT_A_GPU = ("GPU available: False, used: False",)  # a GPU that is there is still reported


def test_quiet_third_party_silences_exactly_the_known_lines(tmp_path: Path) -> None:
    """A tiny Lightning run prints the known lines; after quiet_third_party() it prints none of
    them, and still prints everything else (here: another warning, Lightning's own stop line)."""
    outputs = {}
    for mode in ("loud", "quiet"):
        proc = subprocess.run(
            [sys.executable, "-c", _LIGHTNING_RUN, str(tmp_path / mode), mode], capture_output=True, text=True, timeout=300,
            cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        assert proc.returncode == 0 and "DONE" in proc.stdout, proc.stderr[-3000:]
        outputs[mode] = proc.stdout + proc.stderr
    import torch

    for line in KNOWN + (() if torch.cuda.is_available() else KNOWN_WITHOUT_A_GPU):
        assert line in outputs["loud"], f"the loud run no longer prints {line!r}: drop it from corrflow.utils.quiet"
        assert line not in outputs["quiet"], line
    for kept in ("an unrelated warning", "`Trainer.fit` stopped"):
        assert kept in outputs["quiet"]


def test_every_tool_is_quiet() -> None:
    """Every tool silences the known lines first thing in its main()."""
    tools = sorted((REPO / "tools").glob("*.py"))
    assert len(tools) >= 11
    for path in tools:
        text = path.read_text()
        main = text[text.index("\ndef main(") + 1 :]
        body = [line.strip() for line in main.splitlines()[1:] if line.strip()]
        first = body[1] if body[0] == "setup_logging()" else body[0]  # only the logging set-up may come before it
        assert first.startswith("quiet_third_party()"), f"{path.name}: main() does not start with quiet_third_party(): {first}"
        assert "from corrflow.utils.quiet import quiet_third_party" in text, path.name


def _kept(logger: str, message: str) -> bool:
    """Whether the filter quiet_third_party() puts on ``logger`` lets ``message`` through (the
    filter is built here, not installed: the tests' own logging stays as it is)."""
    from corrflow.utils.quiet import KNOWN_LOG_LINES, _DropKnownLines

    record = logging.LogRecord(logger, logging.INFO, __file__, 1, message, None, None)
    return _DropKnownLines(KNOWN_LOG_LINES.get(logger, ())).filter(record)


def test_only_the_empty_device_lines_and_the_seed_line_go() -> None:
    rank_zero = "pytorch_lightning.utilities.rank_zero"
    assert not _kept(rank_zero, "GPU available: False, used: False")
    assert not _kept(rank_zero, "TPU available: False, using: 0 TPU cores")
    assert _kept(rank_zero, "GPU available: True (cuda), used: True")
    assert _kept(rank_zero, "GPU available: True (cuda), used: False")
    assert _kept(rank_zero, "`Trainer.fit` stopped: `max_steps=2` reached.")
    for seed in ("lightning_fabric.utilities.seed", "lightning.fabric.utilities.seed"):
        assert not _kept(seed, "Seed set to 12345") and not _kept(seed, "[rank: 1] Seed set to 0")
        assert _kept(seed, "Seed set to 12345 and something else")
    assert not _kept("httpx", 'HTTP Request: HEAD http://127.0.0.1:7860/ "HTTP/1.1 200 OK"')
    assert _kept("httpx", "an httpx warning")


@pytest.mark.parametrize("tool", ["flow", "demo"])
def test_the_help_of_every_hydra_tool_is_corrflow_s(tool: str) -> None:
    """Not Hydra's "<app> is powered by Hydra." (tests/test_tools_help.py holds train, propagate
    and finetune to more)."""
    from tests.test_utils_cli import run_tool

    proc = run_tool(REPO / "tools" / f"{tool}.py", "--help")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(f"tools/{tool}.py: "), proc.stdout[:300]
    assert "powered by Hydra" not in proc.stdout and "Config groups (group=option):" in proc.stdout
