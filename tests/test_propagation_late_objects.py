"""Objects that enter after the first frame: LabelPropagator.join, DAVIS late ids, and task=ytvos
(the submission layout, its ids and archive, local scoring, the upload message)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from corrflow.features.lab import LabFeatures
from corrflow.propagation.functional import mixed_context_attention
from corrflow.propagation.propagator import LabelPropagator
from corrflow.propagation.run import propagate
from corrflow.utils.io import read_indexed_png, write_indexed_png
from tests.test_data_ytvos import late_square_video, make_ytvos_tree
from tests.test_tools_propagate import compose_cfg

pytestmark = pytest.mark.usefixtures("one_thread")

# Raw Lab colour under CorrFlow's un-normalised dot product lets the brightest colour (the yellow
# square) win every window; normalised, Lab tracks the squares (as in test_tools_propagate).
NORMALISED = {"crw": (), "corrflow": ("protocol.propagator.normalize=true", "protocol.propagator.temperature=0.05")}


def make_late_davis(root: Path, n: int = 9, enter: int = 5) -> Path:
    """A DAVIS-2017 tree of one video whose object 2 appears at frame ``enter`` (annotated on every frame)."""
    frames, masks = late_square_video(n, enter=enter)
    from PIL import Image

    for t in range(n):
        d = root / "JPEGImages" / "480p" / "late"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(frames[t]).save(d / f"{t:05d}.png")
        write_indexed_png(root / "Annotations" / "480p" / "late" / f"{t:05d}.png", masks[t])
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("late\n")
    return root


def test_several_global_frames_match_a_dense_float64_reference() -> None:
    """G frames seen whole are one softmax over all their locations (no recent frames, with and without top-k)."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 5, 4, 6, generator=g, dtype=torch.float64)
    k = torch.randn(1, 3, 5, 4, 6, generator=g, dtype=torch.float64)
    v = torch.rand(1, 3, 2, 4, 6, generator=g, dtype=torch.float64)
    empty_k, empty_v = q.new_zeros(1, 0, 5, 4, 6), q.new_zeros(1, 0, 2, 4, 6)
    logits = torch.einsum("cp,gcl->pgl", q[0].flatten(1), k[0].flatten(2)).reshape(24, -1) / 0.5  # (HW, G*HW)
    values = v[0].flatten(2).permute(0, 2, 1).reshape(-1, 2)  # (G*HW, D)
    for topk in (None, 7):
        lg = logits.clone()
        if topk:
            lg[lg < lg.topk(topk, dim=1).values[:, -1:]] = float("-inf")
        ref = (torch.softmax(lg, dim=1) @ values).T.reshape(1, 2, 4, 6)
        out = mixed_context_attention(q, k, v, empty_k, empty_v, radius=2, temperature=0.5, topk=topk)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("protocol", ["crw", "corrflow"])
def test_join_adds_the_object_from_its_frame_on(protocol: str) -> None:
    """An object that appears at frame 5 is absent before and tracked from 5; the first object is
    tracked throughout, and frames before 5 are those of a run that never hears of the second."""
    frames, masks = late_square_video(9, enter=5)
    kw = dict(global_first=True, n_recent=3, radius=4, window="disc", temperature=0.05, topk=5, feedback="soft", normalize=True)
    if protocol == "corrflow":
        kw = dict(global_first=False, n_recent=1, radius=3, window="square", temperature=1.0, topk=None, feedback="argmax", normalize=False)
    prop = LabelPropagator(LabFeatures(stride=4), **kw)
    img = lambda t: torch.from_numpy(frames[t]).permute(2, 0, 1).float() / 255  # noqa: E731
    grid = lambda m, ids: torch.nn.functional.avg_pool2d(torch.stack([(torch.from_numpy(m) == i).float() for i in ids])[None], 4)[0]  # noqa: E731
    first = grid(masks[0], [0, 1])
    preds = [prop.step(img(0), first)]
    preds += [prop.step(img(t)) for t in range(1, 5)]
    joined = prop.join(img(5), grid(masks[5], [2]))
    assert joined.shape[0] == 3 and torch.allclose(joined.sum(0), torch.ones(8, 12))
    assert torch.equal(joined[2], grid(masks[5], [2])[0])  # the given mask wins where it is given
    after = [joined] + [prop.step(img(t)) for t in range(6, 9)]
    assert all(p.shape[0] == 3 for p in after)
    if protocol == "crw":
        assert prop.context_frames[:2] == [0, 5]  # the entry frame is a reference seen whole
    solo = LabelPropagator(LabFeatures(stride=4), **kw)
    alone = [solo.step(img(0), first)] + [solo.step(img(t)) for t in range(1, 5)]
    for a, b in zip(preds, alone):
        assert torch.equal(a, b)
    for t, p in zip(range(5, 9), after):
        ids = p.argmax(0)
        for obj in (1, 2):
            truth = grid(masks[t], [obj])[0] > 0.5
            assert ((ids == obj) & truth).sum() >= 0.7 * truth.sum(), (t, obj)
    assert all((p.argmax(0) != 2).all() for p in preds)  # only 2 channels before frame 5: never object 2


@pytest.mark.parametrize("protocol", ["crw", "corrflow"])
def test_davis_late_objects_end_to_end(tmp_path: Path, protocol: str) -> None:
    root = make_late_davis(tmp_path / "DAVIS")
    out = tmp_path / "out"
    result = propagate(compose_cfg("task=davis", f"data.root={root}", f"output_dir={out}", "features=lab",
                                   f"protocol={protocol}", "task.late_objects=true", *NORMALISED[protocol]))  # fmt: skip
    pred = np.stack([read_indexed_png(out / "results" / "late" / f"{t:05d}.png") for t in range(9)])
    assert not (pred[:5] == 2).any()
    assert np.array_equal(pred[5] == 2, read_indexed_png(root / "Annotations" / "480p" / "late" / "00005.png") == 2)
    gt = np.stack([read_indexed_png(root / "Annotations" / "480p" / "late" / f"{t:05d}.png") for t in range(9)])
    for t in range(5, 9):  # tracked: on the square (at least a feature cell of it), not spread over the frame
        assert ((pred[t] == 2) & (gt[t] == 2)).sum() >= 16 and (pred[t] == 2).sum() <= 2 * (gt[t] == 2).sum(), t
    assert result["scores"]["J&F-Mean"] > 0.5
    rows = (out / "scores" / "per-sequence_results-val.csv").read_text()
    assert "late_1" in rows and "late_2" in rows
    # Without the option, DAVIS's protocol stands: an id the first frame lacks is an error.
    with pytest.raises(ValueError, match=r"00005\.png: object ids \[2\] are not in the first-frame annotation"):
        propagate(compose_cfg("task=davis", f"data.root={root}", f"output_dir={tmp_path / 'o2'}", "features=lab"))


@pytest.mark.parametrize("protocol", ["crw", "corrflow"])
def test_ytvos_submission_layout_ids_and_archive(tmp_path: Path, capsys, protocol: str) -> None:
    root = make_ytvos_tree(tmp_path / "ytvos", ids=(1, 3))
    out = tmp_path / "out"
    result = propagate(compose_cfg("task=ytvos", f"data.root={root}", f"output_dir={out}", "features=lab", f"protocol={protocol}",
                                   *NORMALISED[protocol]))  # fmt: skip
    for name, n in (("vid-a", 8), ("vid-b", 6)):
        pngs = sorted((out / "results" / name).glob("*.png"))
        assert [p.stem for p in pngs] == [f"{5 * t:05d}" for t in range(n)]  # every frame meta.json asks for
        pred = [read_indexed_png(p) for p in pngs]
        assert all(set(np.unique(p).tolist()) <= {0, 1, 3} for p in pred)  # the original ids
        assert not any((p == 3).any() for p in pred[:3])  # absent before it enters
        assert (pred[3] == 3).sum() == 64  # its given mask, where it enters
        if protocol == "crw":  # (CorrFlow's arg-max feed-back on raw colour erodes the JPEG square; not tested here)
            assert all(16 <= (p == 3).sum() <= 128 for p in pred[3:]) and all(16 <= (p == 1).sum() <= 128 for p in pred)
    with zipfile.ZipFile(out / "submission.zip") as z:
        names = sorted(z.namelist())
        assert names[0] == "Annotations/vid-a/00000.png" and len(names) == 14
        assert all(n.startswith("Annotations/") and n.endswith(".png") for n in names)
        assert z.read("Annotations/vid-b/00025.png") == (out / "results" / "vid-b" / "00025.png").read_bytes()
    assert result["scores"] is None and result["submission"] == str(out / "submission.zip")
    assert "competitions.codalab.org" in capsys.readouterr().out


def test_ytvos_scores_locally_with_seen_and_unseen_where_ground_truth_exists(tmp_path: Path) -> None:
    root = make_ytvos_tree(tmp_path / "ytvos", "train", {"vid-a": 8, "vid-b": 6, "vid-c": 6}, ground_truth=True, categories=("cat", "dog"))
    # vid-c (not scored) holds only cats: cat is seen, dog unseen.
    import json

    meta = json.loads((root / "train" / "meta.json").read_text())
    meta["videos"]["vid-c"]["objects"]["3"]["category"] = "cat"
    (root / "train" / "meta.json").write_text(json.dumps(meta))
    (root / "holdout.txt").write_text("vid-a\nvid-b\n")
    out = tmp_path / "out"
    result = propagate(compose_cfg("task=ytvos", f"data.root={root}", f"output_dir={out}", "features=lab", "protocol=crw",
                                   "task.dataset.split=train", "task.dataset.split_file=holdout.txt"))  # fmt: skip
    s = result["scores"]
    assert set(s) >= {"J", "F", "J-seen", "F-seen", "J-unseen", "F-unseen", "Overall"}
    assert s["Overall"] == pytest.approx((s["J-seen"] + s["F-seen"] + s["J-unseen"] + s["F-unseen"]) / 4)
    assert s["J-seen"] > 0.6 and s["J-unseen"] > 0.6
    rows = (out / "scores" / "ytvos_per-object-train.csv").read_text().splitlines()
    assert rows[0] == "Video,Object,Category,Seen,J,F" and "vid-a,1,cat,1," in rows[1] and "vid-a,3,dog,0," in rows[2]
    # Perfect predictions score 1: J and F are computed against the right frames.
    from corrflow.evaluation.ytvos import evaluate_ytvos

    perfect = tmp_path / "perfect"
    for v in ("vid-a", "vid-b"):
        for p in (root / "train" / "Annotations" / v).glob("*.png"):
            write_indexed_png(perfect / v / p.name, read_indexed_png(p))
    best = evaluate_ytvos(perfect, root, split="train", sequences=["vid-a", "vid-b"], progress=False).as_dict()
    assert best["J"] == 1.0 and best["F"] == 1.0 and best["Overall"] == 1.0
