"""The YouTube-VOS hold-out (corrflow.data.vos.ytvos_holdout, tools/ytvos_holdout.py): the lists
partition train; every video of an unseen class is held out and none of its class is left; seen
objects are those whose class the rest still has, as the scorer counts them; seeded; errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from corrflow.data.vos.ytvos import YTVOSObject, read_meta
from corrflow.data.vos.ytvos_holdout import make_holdout
from corrflow.evaluation.ytvos import _seen_categories

REPO = Path(__file__).resolve().parents[1]


def meta(n_videos: int = 40, seed: int = 0) -> dict[str, list[YTVOSObject]]:
    """Videos of 1-3 objects over 8 classes (class k in about 1/8 of them), a few unlabelled."""
    import random

    rng = random.Random(seed)
    out = {}
    for i in range(n_videos):
        objs = [YTVOSObject(k + 1, None if rng.random() < 0.05 else f"class{rng.randrange(8)}", ("00000",)) for k in range(rng.randint(1, 3))]
        out[f"v{i:03d}"] = objs
    return out


def test_lists_partition_train_and_unseen_classes_leave_the_rest():
    videos = meta()
    h = make_holdout(videos, unseen_classes=2, seen_videos=5, seed=1)
    assert sorted(h.held_out + h.rest) == sorted(videos) and not set(h.held_out) & set(h.rest)
    assert len(h.unseen_classes) == 2
    rest_classes = {o.category for v in h.rest for o in videos[v] if o.category}
    assert not set(h.unseen_classes) & rest_classes
    with_unseen = {v for v, objs in videos.items() if any(o.category in h.unseen_classes for o in objs)}
    assert with_unseen <= set(h.held_out) and len(h.held_out) == len(with_unseen) + 5
    # the counts are what an independent pass over the held-out objects gives
    held_objs = [o for v in h.held_out for o in videos[v]]
    assert h.objects["unlabelled"] == sum(o.category is None for o in held_objs)
    assert h.objects["seen"] == sum(o.category in rest_classes for o in held_objs)
    assert h.objects["unseen"] == sum(o.category is not None and o.category not in rest_classes for o in held_objs) > 0
    assert h.objects["seen"] > 0


def test_the_draw_is_seeded_and_zero_unseen_classes_hold_out_random_videos_only():
    videos = meta()
    assert make_holdout(videos, unseen_classes=2, seen_videos=5, seed=3) == make_holdout(videos, unseen_classes=2, seen_videos=5, seed=3)
    assert make_holdout(videos, unseen_classes=2, seen_videos=5, seed=3) != make_holdout(videos, unseen_classes=2, seen_videos=5, seed=4)
    h = make_holdout(videos, unseen_classes=0, seen_videos=7)
    assert len(h.held_out) == 7 and h.unseen_classes == []


def test_impossible_requests_are_errors():
    with pytest.raises(ValueError, match="only 8"):
        make_holdout(meta(), unseen_classes=9)
    with pytest.raises(ValueError, match="more held-out videos"):
        make_holdout(meta(), unseen_classes=0, seen_videos=41)
    with pytest.raises(ValueError, match=">= 0"):
        make_holdout(meta(), unseen_classes=-1)


def test_tool_writes_the_lists_that_the_scorer_reads_as_seen_and_unseen(tmp_path):
    videos = meta(seed=2)
    root = tmp_path / "YouTubeVOS"
    (root / "train").mkdir(parents=True)
    doc = {"videos": {v: {"objects": {str(o.id): {"category": o.category, "frames": list(o.frames)} for o in objs}} for v, objs in videos.items()}}
    (root / "train" / "meta.json").write_text(json.dumps(doc))
    out = tmp_path / "lists" / "holdout"
    run = subprocess.run([sys.executable, str(REPO / "tools" / "ytvos_holdout.py"), "--root", str(root), "--unseen-classes", "2",
                          "--seen-videos", "4", "--seed", "5", "--out", str(out)], capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert run.returncode == 0, run.stderr
    held = (tmp_path / "lists" / "holdout.txt").read_text().split()
    rest = (tmp_path / "lists" / "holdout_rest.txt").read_text().split()
    h = make_holdout(read_meta(root / "train" / "meta.json"), unseen_classes=2, seen_videos=4, seed=5)
    assert held == h.held_out and rest == h.rest
    assert f"{len(held)} videos ({h.objects['seen']} seen, {h.objects['unseen']} unseen" in run.stdout
    seen = _seen_categories(root / "train" / "meta.json", set(held))  # what evaluate_ytvos calls seen
    assert seen == {o.category for v in rest for o in videos[v] if o.category}
    bad = subprocess.run([sys.executable, str(REPO / "tools" / "ytvos_holdout.py"), "--root", str(tmp_path / "nowhere")],
                         capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert bad.returncode == 1 and "meta file not found" in bad.stderr and "Traceback" not in bad.stderr
