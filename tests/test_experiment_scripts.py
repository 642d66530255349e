"""The experiment scripts under docs/experiments run end to end on tiny generated data: every stage
they chain, and the report they write from the runs' logs and scores (slow: a dozen processes)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers.vos_synthetic import write_davis_tree
from tests.test_tools_propagate import make_checkpoint

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["bmx-trees", "breakdance", "car-roundabout", "dance-twirl", "paragliding-launch"]
TEST = ["car-shadow", "drift-chicane", "kite-surf", "libby", "scooter-black"]


@pytest.mark.slow
def test_osvos_dev_script_trains_segments_and_reports(tmp_path: Path) -> None:
    root = write_davis_tree(tmp_path / "DAVIS", {n: 3 for n in TRAIN + TEST}, size=(32, 48), n_objects=1, year="2016", split="dev")
    out = tmp_path / "out"
    env = {
        **os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "DATA": str(root), "OUT": str(out), "STEPS": "2",
        "STARTS": "random corrflow", "CURVE_START": "corrflow", "CURVE_STEPS": "0 2", "ONESHOT_STEPS": "2", "DEVICE": "cpu",
        "CORRFLOW_CKPT": str(make_checkpoint(tmp_path / "pre.ckpt")),
        "EXTRA_FINETUNE": "data.size=[32,32] data.batch_size=2 data.num_workers=0 trainer=cpu model.net.side_channels=4",
        "EXTRA_PROPAGATE": "method.superpixels.n_segments=12 method.short_side=16",
    }  # fmt: skip
    run = subprocess.run(["bash", "docs/experiments/osvos_davis2016_dev.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stderr[-3000:]
    table = (out / "table.md").read_text().splitlines()
    assert len(table) == 2 + 4 and table[2].startswith("| random | no |") and table[5].startswith("| corrflow | yes |")
    assert "nan" not in "\n".join(table)  # every row found its one-shot timings in its log
    curve = (out / "curve.md").read_text().splitlines()
    assert [r.split("|")[1].strip() for r in curve[2:]] == ["0", "2"]
    assert (out / "osvos_steps_curve.png").stat().st_size > 0
    for start in ("random", "corrflow"):
        assert len(list((out / "propagate" / f"{start}-snap" / "results").glob("*.done"))) == 5
