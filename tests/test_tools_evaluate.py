"""tools/evaluate.py: the three sub-commands on tiny inputs, and its error exit."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from corrflow.utils.io import write_indexed_png

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "evaluate.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("corrflow_tools_evaluate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _davis_tree(root: Path) -> np.ndarray:
    gt = np.zeros((4, 10, 12), dtype=np.uint8)
    gt[:, 2:6, 3:7] = 1
    for i, frame in enumerate(gt):
        write_indexed_png(root / "Annotations" / "480p" / "seq" / f"{i:05d}.png", frame)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("seq\n")
    return gt


def test_davis_command(tool, tmp_path, capsys):
    gt = _davis_tree(tmp_path / "davis")
    pred = gt.copy()
    pred[1] = 0  # one of two scored frames empty: J = F = 0.5
    for i, frame in enumerate(pred):
        write_indexed_png(tmp_path / "res" / "seq" / f"{i:05d}.png", frame)
    rc = tool.main(["davis", "--results", str(tmp_path / "res"), "--davis-root", str(tmp_path / "davis"), "--no-progress"])
    assert rc == 0
    assert (tmp_path / "res" / "global_results-val.csv").read_text().splitlines()[1].startswith("0.500,0.500,0.500,")
    assert (tmp_path / "res" / "per-sequence_results-val.csv").read_text().splitlines()[1] == "seq_1,0.500,0.500"


def test_errors_exit_with_a_message(tool, tmp_path, monkeypatch):
    monkeypatch.delenv("CORRFLOW_DEBUG", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    _davis_tree(tmp_path / "davis")
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["davis", "--results", str(tmp_path / "missing"), "--davis-root", str(tmp_path / "davis")])
    assert exit_info.value.code == f"error: results folder not found: {tmp_path / 'missing'}"


def test_script_error_is_one_line(tmp_path):
    """Run as a program, a bad results folder (a result PNG of another size) ends with one
    'error:' line naming the file, exit status 1, no traceback."""
    from tests.test_utils_cli import assert_one_clear_line, run_tool

    gt = _davis_tree(tmp_path / "davis")
    for i, frame in enumerate(gt):
        write_indexed_png(tmp_path / "res" / "seq" / f"{i:05d}.png", frame)
    write_indexed_png(tmp_path / "res" / "seq" / "00001.png", np.zeros((5, 5), np.uint8))
    proc = run_tool(SCRIPT, "davis", "--results", str(tmp_path / "res"), "--davis-root", str(tmp_path / "davis"), "--no-progress")
    assert_one_clear_line(proc, r"seq/00001\.png: result mask is 5x5")


def test_keypoints_command(tool, tmp_path, capsys):
    pts = [[0, 0, 1], [30, 40, 1], [0, 40, 1]]
    (tmp_path / "ann.json").write_text(json.dumps({"sequences": {"s": {"0": pts, "1": pts}}}))
    np.savez(tmp_path / "s.npz", keypoints=np.array([[p[:2] for p in pts]] * 2, dtype=float))
    assert tool.main(["keypoints", "--results", str(tmp_path), "--annotations", str(tmp_path / "ann.json")]) == 0
    assert "pck@0.1: 100.0" in capsys.readouterr().out
    assert (tmp_path / "pck_results.csv").read_text().splitlines()[-1] == "mean,1.0000,1.0000"


def test_jhmdb_command(tool, tmp_path, capsys):
    pos = np.zeros((2, 15, 3))
    pos[0] = np.arange(15)[:, None] * 10 + 1  # 1-based
    pos[1] = np.arange(15)[:, None] * 5 + 1
    mat = tmp_path / "jhmdb" / "joint_positions" / "catch" / "clip" / "joint_positions.mat"
    mat.parent.mkdir(parents=True)
    savemat(str(mat), {"pos_img": pos})
    (tmp_path / "split.txt").write_text("catch/clip\n")
    pred = pos.transpose(2, 1, 0) - 1
    pred[2, 0] += 1000  # one miss in the 2 scored frames of joint 0
    (tmp_path / "res" / "catch").mkdir(parents=True)
    np.savez(tmp_path / "res" / "catch" / "clip.npz", keypoints=pred)
    args = ["jhmdb", "--results", str(tmp_path / "res"), "--jhmdb-root", str(tmp_path / "jhmdb")]
    assert tool.main([*args, "--split-file", str(tmp_path / "split.txt"), "--thresholds", "0.1"]) == 0
    # joint 0: 1 of 2 frames; the 14 others: 2 of 2 -> (0.5 + 14) / 15
    assert f"pck@0.1: {100 * 14.5 / 15:.1f}" in capsys.readouterr().out


def test_script_runs_as_a_program(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for command in ("davis", "jhmdb", "keypoints"):
        assert command in proc.stdout
