"""Errors that name the real problem: every wrong input of a propagation at once, a file that is
no checkpoint called so, an empty results folder with the layout expected, and no empty run
folder left behind by a failed run."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from corrflow.models.checkpoint import not_a_checkpoint, read_checkpoint
from corrflow.utils.cli import UserErrors, drop_unused_run_dir, raise_user_errors, user_errors
from corrflow.utils.io import write_indexed_png
from tests.test_data_davis import make_davis_tree
from tests.test_utils_cli import assert_one_clear_line, run_tool

REPO = Path(__file__).resolve().parents[1]
NO_CKPT = "features=checkpoint needs a checkpoint: ckpt="

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    for name in ("CORRFLOW_DEBUG", "HYDRA_FULL_ERROR"):
        monkeypatch.delenv(name, raising=False)


def propagate_cfg(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="propagate", overrides=[*overrides, "progress=false"])
    GlobalHydra.instance().clear()
    return cfg


def error_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def run_folders(logs: Path) -> list[Path]:
    return sorted(p for p in logs.glob("*/runs/*") if p.is_dir()) if logs.is_dir() else []


# -- several errors at once --------------------------------------------------------------------

def test_user_errors_reports_each_of_several_on_its_own_line() -> None:
    @user_errors
    def main() -> None:
        raise_user_errors([FileNotFoundError("DAVIS root not found: /nope"), ValueError("needs a checkpoint: ckpt=...")])

    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == "error: DAVIS root not found: /nope\nerror: needs a checkpoint: ckpt=..."
    raise_user_errors([])  # nothing to report
    with pytest.raises(KeyError):  # one error: itself, its type kept
        raise_user_errors([KeyError("x")])


def test_propagation_reports_a_missing_checkpoint_and_a_missing_data_root_together(tmp_path: Path) -> None:
    from corrflow.propagation.run import propagate

    cfg = propagate_cfg("task=davis2016", "features=checkpoint", f"data.root={tmp_path / 'nope'}", f"output_dir={tmp_path / 'out'}")
    with pytest.raises(UserErrors) as info:
        propagate(cfg)
    messages = [str(e) for e in info.value.errors]
    assert len(messages) == 2, messages
    assert messages[0].startswith(f"DAVIS root not found: {tmp_path / 'nope'}")
    assert messages[1].startswith(NO_CKPT)
    assert not (tmp_path / "out").exists()


def test_the_propagate_tool_names_both_problems_and_leaves_no_run_folder(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    proc = run_tool(REPO / "tools" / "propagate.py", "task=davis2016", "features=checkpoint", f"data.root={tmp_path / 'nope'}",
                    f"paths.log_dir={logs}", "progress=false")  # fmt: skip
    lines = error_lines(proc)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines), lines
    assert lines[0].startswith("error: DAVIS root not found") and lines[1].startswith(f"error: {NO_CKPT}")
    assert run_folders(logs) == [] and not (logs / "propagate").exists(), sorted(logs.rglob("*"))


# -- a file that is not a checkpoint -------------------------------------------------------------

def test_a_text_file_is_not_a_pytorch_checkpoint(tmp_path: Path) -> None:
    text = tmp_path / "notes.ckpt"
    text.write_text("ckpt_path = logs/corrflow/runs/x/last.ckpt\n")
    with pytest.raises(ValueError) as info:
        read_checkpoint(text)
    message = str(info.value)
    assert message.startswith(f"{text} is not a PyTorch checkpoint: it is a text file")
    assert "MARK" not in message and "pickle" not in message.lower()

    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.ckpt is empty, not a PyTorch checkpoint"):
        read_checkpoint(empty)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(bytes(range(256)))
    with pytest.raises(ValueError, match=r"junk\.ckpt is not a PyTorch checkpoint \(neither a zip archive nor a pickle"):
        read_checkpoint(junk)

    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {}}, good)
    assert not_a_checkpoint(good) is None and read_checkpoint(good)[0] == {"state_dict": {}}
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(good.read_bytes()[:60])  # a torch.save archive cut short
    with pytest.raises(ValueError, match=r"damaged\.ckpt: cannot read this PyTorch checkpoint; is it truncated or damaged"):
        read_checkpoint(damaged)


def test_propagation_with_a_text_file_as_checkpoint_says_so(tmp_path: Path) -> None:
    from corrflow.propagation.run import propagate

    root = make_davis_tree(tmp_path / "DAVIS")
    text = tmp_path / "last.ckpt"
    text.write_text("not a checkpoint\n")
    cfg = propagate_cfg("task=davis", "features=checkpoint", f"ckpt={text}", f"data.root={root}", f"output_dir={tmp_path / 'out'}")
    with pytest.raises(Exception) as info:
        propagate(cfg)
    from corrflow.utils.cli import find_user_error

    err = find_user_error(info.value)
    assert isinstance(err, ValueError) and str(err).startswith(f"{text} is not a PyTorch checkpoint: it is a text file"), info.value


def test_training_from_a_text_file_says_it_is_not_a_checkpoint(tiny_train_cfg, tmp_path: Path) -> None:
    from corrflow.train import train

    text = tmp_path / "last.ckpt"
    text.write_text("hello\n")
    with pytest.raises(ValueError, match=rf"^ckpt_path={re.escape(str(text))} is not a PyTorch checkpoint: it is a text file"):
        train(tiny_train_cfg(f"ckpt_path={text}"))


# -- an empty results folder -----------------------------------------------------------------------

def _gt(root: Path) -> Path:
    frame = np.zeros((10, 12), np.uint8)
    frame[2:6, 3:7] = 1
    for seq in ("bear", "cows"):
        for i in range(3):
            write_indexed_png(root / "Annotations" / "480p" / seq / f"{i:05d}.png", frame)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("bear\ncows\n")
    return root


def test_evaluating_an_empty_results_folder_says_so_and_shows_the_layout(tmp_path: Path) -> None:
    from corrflow.evaluation import evaluate_davis

    davis, results = _gt(tmp_path / "DAVIS"), tmp_path / "results"
    results.mkdir()
    with pytest.raises(FileNotFoundError) as info:
        evaluate_davis(results, davis, split="val", progress=False)
    message = str(info.value)
    assert message.startswith(f"{results} holds no results: it is empty (2 sequences to score: bear, cows)")
    assert f"{results}/<sequence>/<frame>.png" in message and str(results / "bear" / "00000.png") in message

    (results / "notes.txt").write_text("x")  # something else there: named
    with pytest.raises(FileNotFoundError, match=r"none of the 2 sequences to score \(bear, cows\) has a folder there \(it holds notes\.txt\)"):
        evaluate_davis(results, davis, split="val", progress=False)
    # one sequence there, one missing: that one is named, as before
    for i in range(3):
        write_indexed_png(results / "bear" / f"{i:05d}.png", np.zeros((10, 12), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"results of sequence 'cows' not found"):
        evaluate_davis(results, davis, split="val", progress=False)


def test_the_evaluate_tool_on_an_empty_folder_is_one_line(tmp_path: Path) -> None:
    davis, results = _gt(tmp_path / "DAVIS"), tmp_path / "results"
    results.mkdir()
    proc = run_tool(REPO / "tools" / "evaluate.py", "davis", "--results", str(results), "--davis-root", str(davis))
    # one stderr line: no progress bars before it
    assert_one_clear_line(proc, rf"^error: {re.escape(str(results))} holds no results: it is empty .*<sequence>/<frame>\.png")


# -- no empty run folder ---------------------------------------------------------------------------

def test_a_training_run_with_a_missing_data_root_leaves_no_run_folder(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    proc = run_tool(REPO / "tools" / "train.py", f"data.root={tmp_path / 'nope'}", f"paths.log_dir={logs}",
                    f"paths.cache_dir={tmp_path / 'cache'}")  # fmt: skip
    lines = error_lines(proc)  # the one line: Lightning's "Seed set to ..." before it is silenced (corrflow.utils.quiet)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines == [f"error: data path not found: {tmp_path / 'nope'}"], lines
    assert run_folders(logs) == [] and not (logs / "train").exists(), sorted(logs.rglob("*"))


def _hydra_run(run: Path, config_subdir: str = ".hydra", log: str = "train.log") -> None:
    (run / config_subdir).mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (run / config_subdir / name).write_text("x: 1\n")
    (run / log).write_text("[INFO] starting\n")


def test_drop_unused_run_dir(tmp_path: Path) -> None:
    since = time.time() - 1.0
    # a fresh run folder holding only Hydra's config and log: removed, with its emptied runs/ and task folders
    run = tmp_path / "logs" / "train" / "runs" / "2026-01-01_00-00-00"
    _hydra_run(run)
    (tmp_path / "logs" / "other").mkdir()
    assert drop_unused_run_dir(run, config_subdir=".hydra", log_name="train.log", since=since) == run
    assert not (tmp_path / "logs" / "train").exists() and (tmp_path / "logs" / "other").is_dir()
    # a run folder the run wrote into: kept
    run = tmp_path / "logs" / "train" / "runs" / "2026-01-01_00-00-01"
    _hydra_run(run)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert drop_unused_run_dir(run, config_subdir=".hydra", log_name="train.log", since=since) is None
    assert (run / ".hydra" / "config.yaml").is_file()
    # a resumed run (its own old folder) that failed before writing: only its config record goes
    old = tmp_path / "resumed"
    _hydra_run(old)
    (old / "checkpoints").mkdir()
    (old / "checkpoints" / "last.ckpt").write_bytes(b"x")
    past = time.time() - 3600
    for p in old.rglob("*"):
        os.utime(p, (past, past))
    _hydra_run_config = old / ".hydra" / "resumed-2026-01-02_00-00-00"
    _hydra_run_config.mkdir()
    (_hydra_run_config / "config.yaml").write_text("x: 2\n")
    assert drop_unused_run_dir(old, config_subdir=".hydra/resumed-2026-01-02_00-00-00", log_name="train.log", since=since) == _hydra_run_config
    assert not _hydra_run_config.exists() and (old / ".hydra" / "config.yaml").is_file() and (old / "checkpoints" / "last.ckpt").is_file()
    # ... and one that wrote something (a checkpoint) before failing keeps its record
    _hydra_run_config.mkdir()
    (_hydra_run_config / "config.yaml").write_text("x: 2\n")
    (old / "checkpoints" / "last.ckpt").write_bytes(b"y")
    assert drop_unused_run_dir(old, config_subdir=".hydra/resumed-2026-01-02_00-00-00", log_name="train.log", since=since) is None
    assert _hydra_run_config.is_dir()


def test_every_hydra_tool_that_makes_a_run_folder_drops_it_on_failure() -> None:
    for tool in ("train", "finetune", "propagate", "flow", "fit_colour_bins"):
        text = (REPO / "tools" / f"{tool}.py").read_text()
        assert "with discard_unused_run_dir():" in text, tool
