"""``tools/propagate.py method=osvos``: the one-shot step improves the fit to the first frame; the
objects are combined by arg-max with a background threshold; a first frame without objects; end to
end on generated DAVIS trees (davis and davis2016) through the run's writing, scoring, overlays and
resume, with and without boundary snapping; wrong kinds of checkpoint say what to pass."""

from __future__ import annotations

import importlib.util
import logging
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from corrflow.losses import class_balanced_bce_loss
from corrflow.models.segmenters import load_segmenter
from corrflow.propagation.osvos import OSVOSVideoSegmenter, combine_objects, one_shot_finetune
from corrflow.propagation.run import propagate
from corrflow.utils.io import read_indexed_png
from tests.helpers.vos_synthetic import moving_objects, write_davis_tree
from tests.test_data_jhmdb import make_jhmdb_tree
from tests.test_tools_propagate import CONF_DIR, compose_cfg, make_checkpoint

HAS_EVALUATION = importlib.util.find_spec("corrflow.evaluation") is not None

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ("method.finetune.steps=3", "method.superpixels.n_segments=12")


def save_osvos_checkpoint(path: Path, *, target: str = "mask", seed: int = 0) -> Path:
    """An untrained OSVOS network (CRW-variant backbone, narrow sides) saved as tools/finetune.py does."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="finetune", overrides=["experiment=osvos_parent", "model.backbone.arch=crw",
                                                          "model.net.side_channels=4", f"model.target={target}"])  # fmt: skip
    GlobalHydra.instance().clear()
    torch.manual_seed(seed)
    lit = instantiate(cfg.model)
    ckpt = {"state_dict": lit.state_dict(), "global_step": 0}
    lit.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return path


def stm_checkpoint(path: Path) -> Path:
    """What decides the kind of a segmenter checkpoint: its ``corrflow`` entry (weights not needed)."""
    torch.save({"state_dict": {}, "corrflow": {"format": 1, "kind": "stm", "backbone": {}, "segmenter": {}, "prefix": "net."}}, path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("osvos")
    return {
        "parent": save_osvos_checkpoint(d / "parent.ckpt"),
        "contour": save_osvos_checkpoint(d / "contour.ckpt", target="contour", seed=1),
        "stm": stm_checkpoint(d / "stm.ckpt"),
        "pre": make_checkpoint(d / "pre.ckpt"),
    }


@pytest.fixture
def davis_root(tmp_path: Path) -> Path:
    return write_davis_tree(tmp_path / "DAVIS", {"a": 5, "b": 4}, size=(32, 48), n_objects=2, split="val")


def run_osvos(root: Path, out: Path, ckpt: Path, *extra: str, task: str = "davis") -> dict:
    return propagate(compose_cfg(f"task={task}", "method=osvos", f"ckpt={ckpt}", f"data.root={root}", f"output_dir={out}", *FAST, *extra))


# -- the one-shot step -------------------------------------------------------------------------

def test_one_shot_finetuning_improves_the_fit_to_the_first_frame(ckpts):
    parent = load_segmenter(ckpts["parent"], kind="osvos")
    frames, masks = moving_objects(3, (32, 48), n_objects=1, seed=5)
    image = torch.from_numpy(frames[0]).permute(2, 0, 1).float() / 255
    target = torch.from_numpy(masks[0] == 1).float()
    before = {k: v.clone() for k, v in parent.state_dict().items()}

    def fit(net):
        with torch.no_grad():
            logit = net(image[None]).fused
        pred = logit[0, 0] > 0
        iou = (pred & target.bool()).sum() / (pred | target.bool()).sum()
        return class_balanced_bce_loss(logit, target[None].long()).item(), float(iou)

    loss0, iou0 = fit(parent)
    tuned = one_shot_finetune(parent, image, target, steps=25, optimizer=partial(torch.optim.Adam, lr=1e-3), seed=0)
    loss1, iou1 = fit(tuned)
    assert loss1 < 0.5 * loss0 and iou1 > iou0 + 0.2, (loss0, loss1, iou0, iou1)
    assert all(torch.equal(v, before[k]) for k, v in parent.state_dict().items())  # the parent is left alone
    assert not tuned.training
    # seeded: the same draws give the same copy
    again = one_shot_finetune(parent, image, target, steps=2, optimizer=partial(torch.optim.Adam, lr=1e-3), seed=4)
    other = one_shot_finetune(parent, image, target, steps=2, optimizer=partial(torch.optim.Adam, lr=1e-3), seed=4)
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in again.state_dict().items())


def _first_frame(size=(32, 48), seed=5):
    frames, masks = moving_objects(2, size, n_objects=1, seed=seed)
    return torch.from_numpy(frames[0]).permute(2, 0, 1).float() / 255, torch.from_numpy(masks[0] == 1).float()


def test_one_shot_trains_on_the_fused_output_alone_by_default(ckpts):
    """The releases fine-tune the one-shot copy on the fused output's loss only: the side outputs'
    score convolutions (which feed nothing else) get no gradient and keep the parent's weights,
    while the fuse and the preparations (which feed it) move. deep_supervision=True trains them too."""
    parent = load_segmenter(ckpts["parent"], kind="osvos")
    image, target = _first_frame()
    opt = partial(torch.optim.Adam, lr=1e-3)
    p = parent.state_dict()
    fused_only = one_shot_finetune(parent, image, target, steps=3, optimizer=opt, seed=0).state_dict()
    deep = one_shot_finetune(parent, image, target, steps=3, optimizer=opt, seed=0, deep_supervision=True).state_dict()
    scores = [k for k in p if k.startswith("score.")]
    assert len(scores) == 2 * len(parent.stages)
    assert all(torch.equal(fused_only[k], p[k]) for k in scores)
    assert all(not torch.equal(deep[k], p[k]) for k in scores)
    for k in ("fuse.weight", *(f"prep.{parent._key(s)}.weight" for s in parent.stages)):
        assert not torch.equal(fused_only[k], p[k]), k
    # one SGD step by hand: the update is the fused output's class-balanced loss gradient (the draws of step 0, seed 0)
    from torchvision import tv_tensors

    from corrflow.data.vos.static import affine_augmentation
    from corrflow.utils.seeding import seeded_cpu_rng

    tuned = one_shot_finetune(parent, image, target, steps=1, optimizer=partial(torch.optim.SGD, lr=0.5), seed=7)
    with seeded_cpu_rng(7):
        x, t = affine_augmentation(degrees=30.0, scale=(0.75, 1.25), hflip=0.5)(tv_tensors.Image(image), tv_tensors.Mask(target.to(torch.uint8)))
    net = load_segmenter(ckpts["parent"], kind="osvos").train()
    class_balanced_bce_loss(net(x.as_subclass(torch.Tensor)[None]).fused, t.as_subclass(torch.Tensor)[None].long()).backward()
    torch.testing.assert_close(tuned.fuse.weight, parent.fuse.weight - 0.5 * net.fuse.weight.grad)


def test_the_one_shot_loss_setting_reaches_the_fine_tuning(ckpts):
    cfg = compose_cfg("task=davis", "method=osvos", f"ckpt={ckpts['parent']}")
    assert cfg.method.finetune.deep_supervision is False
    parent = load_segmenter(ckpts["parent"], kind="osvos")
    image, target = _first_frame()
    labels = torch.stack([1 - target, target])
    for deep in (False, True):
        seg = OSVOSVideoSegmenter(parent, steps=2, optimizer=partial(torch.optim.Adam, lr=1e-3), deep_supervision=deep)
        seg.step(image, labels)
        moved = not torch.equal(seg.models[0].score[parent._key(parent.stages[0])].weight, parent.score[parent._key(parent.stages[0])].weight)
        assert moved == deep


def _small_object_frame(size=(64, 96)):
    """A frame with a large object (1) and a 2 x 2 one (2) at even coordinates, and its (3, H, W) one-hot labels."""
    frames, _ = moving_objects(1, size, n_objects=0, seed=3)
    image = torch.from_numpy(frames[0]).permute(2, 0, 1).float() / 255
    ids = torch.zeros(size, dtype=torch.long)
    ids[8:40, 10:50] = 1
    ids[50:52, 70:72] = 2
    image[:, 50:52, 70:72] = 1.0
    return image, torch.stack([(ids == i).float() for i in range(3)])


def test_an_object_that_vanishes_at_short_side_is_fine_tuned_where_it_exists(ckpts, caplog):
    """short_side=16 on a 64 x 96 frame: a 2 x 2 object area-averages to 0.25, no pixel above 0.5,
    so its target would be all background and the class-balanced loss 0: nothing learnt. It is
    fine-tuned (and segmented) at short side 32, where it keeps a pixel, with a warning; the large
    object stays at 16."""
    from corrflow.propagation.working_size import WorkingSize
    from corrflow.utils.seeding import derive_seed

    parent = load_segmenter(ckpts["parent"], kind="osvos")
    opt = partial(torch.optim.Adam, lr=1e-3)
    image, labels = _small_object_frame()
    vanished = WorkingSize(16).masks(labels[2:3])[0]
    assert vanished.max() == 0.25
    untouched = one_shot_finetune(parent, WorkingSize(16).frame(image), vanished, steps=2, optimizer=opt, seed=0)  # the old behaviour
    assert all(torch.equal(v, parent.state_dict()[k]) for k, v in untouched.state_dict().items())  # zero loss: nothing changed

    seg = OSVOSVideoSegmenter(parent, steps=2, optimizer=opt, short_side=16, seed=3)
    seg.begin_video("tiny")
    with caplog.at_level(logging.WARNING):
        seg.step(image, labels)
    assert "tiny: object 2 vanishes at method.short_side=16" in caplog.text and "short side 32" in caplog.text
    assert [z.short_side for z in seg.sizes] == [16, 32]
    size = WorkingSize(32)
    by_hand = one_shot_finetune(parent, size.frame(image), size.masks(labels[2:3])[0], steps=2, optimizer=opt, seed=derive_seed(3, "osvos-object", 1))
    assert all(torch.equal(v, by_hand.state_dict()[k]) for k, v in seg.models[1].state_dict().items())
    assert any(not torch.equal(v, parent.state_dict()[k]) for k, v in seg.models[1].state_dict().items())
    out = seg.step(image)
    with torch.no_grad():
        prob = torch.sigmoid(by_hand(size.frame(image)[None]).fused)[0]
    torch.testing.assert_close(out[2], size.back(prob, (64, 96))[0], atol=1e-6, rtol=0)  # segmented at 32 too
    assert seg.models[0] is not seg.models[1] and out.shape == (3, 64, 96)


def test_an_object_that_vanishes_below_the_frame_size_is_fine_tuned_at_the_frame_size(ckpts, caplog):
    parent = load_segmenter(ckpts["parent"], kind="osvos")
    image, labels = _small_object_frame()
    labels[0, 50:52, 70:72], labels[2] = 1.0, 0.0
    labels[2, 51, 71], labels[0, 51, 71] = 1.0, 0.0  # one pixel: 1/16 at short side 16, 1/4 at 32; 64 is the frame's own short side
    seg = OSVOSVideoSegmenter(parent, steps=1, optimizer=partial(torch.optim.Adam, lr=1e-3), short_side=16)
    with caplog.at_level(logging.WARNING):
        seg.step(image, labels)
    assert [z.short_side for z in seg.sizes] == [16, None] and "the frame's own size" in caplog.text
    caplog.clear()
    seg = OSVOSVideoSegmenter(parent, steps=1, optimizer=partial(torch.optim.Adam, lr=1e-3), short_side=32)
    img, target = _first_frame((64, 96))
    with caplog.at_level(logging.WARNING):  # nothing vanishes: no warning, every object at short_side
        seg.step(img, torch.stack([1 - target, target]))
    assert "vanishes" not in caplog.text and [z.short_side for z in seg.sizes] == [32]


def test_objects_combined_by_argmax_with_a_background_threshold():
    probs = torch.tensor([[[0.9, 0.3, 0.6, 0.2]], [[0.8, 0.4, 0.7, 0.1]]])  # (N=2, 1, 4)
    labels = combine_objects(probs, threshold=0.5)
    assert labels.argmax(0).tolist() == [[1, 0, 2, 0]]
    assert combine_objects(probs, threshold=0.35).argmax(0).tolist() == [[1, 2, 2, 0]]


def test_a_first_frame_without_objects_gives_background(ckpts, caplog):
    seg = OSVOSVideoSegmenter(load_segmenter(ckpts["parent"], kind="osvos"), steps=1, optimizer=partial(torch.optim.Adam, lr=1e-3))
    frame = torch.rand(3, 16, 24)
    with caplog.at_level(logging.WARNING):
        assert torch.equal(seg.step(frame, torch.ones(1, 16, 24)), torch.ones(1, 16, 24))
    assert "no object" in caplog.text and seg.models == []
    assert torch.equal(seg.step(frame), torch.ones(1, 16, 24))


def test_long_one_shot_at_full_size_on_the_cpu_says_how_to_shorten_it(ckpts, caplog):
    parent, opt = load_segmenter(ckpts["parent"], kind="osvos"), partial(torch.optim.Adam, lr=1e-3)
    with caplog.at_level(logging.WARNING):
        OSVOSVideoSegmenter(parent, steps=1000, optimizer=opt)
    assert "method.short_side=128" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        OSVOSVideoSegmenter(parent, steps=1000, optimizer=opt, short_side=128)
        OSVOSVideoSegmenter(parent, steps=20, optimizer=opt)
    assert "short_side" not in caplog.text


# -- the run -----------------------------------------------------------------------------------

def test_osvos_end_to_end_writes_scores_and_resumes(davis_root, ckpts, tmp_path):
    out = tmp_path / "out"
    result = run_osvos(davis_root, out, ckpts["parent"])
    for seq, n in (("a", 5), ("b", 4)):
        pred = np.stack([read_indexed_png(p) for p in sorted((out / "results" / seq).glob("*.png"))])
        assert pred.shape == (n, 32, 48) and set(np.unique(pred).tolist()) <= {0, 1, 2}
        np.testing.assert_array_equal(pred[0], read_indexed_png(davis_root / "Annotations" / "480p" / seq / "00000.png"))
        assert (out / "results" / f"{seq}.done").is_file() and (out / "overlays" / f"{seq}.gif").is_file()
    if HAS_EVALUATION:
        from tests.helpers.davis_rescore import jf_mean_from_files

        assert result["scores"]["J&F-Mean"] == pytest.approx(jf_mean_from_files(out / "results", davis_root, ["a", "b"]), abs=1e-9)
    (out / "results" / "b.done").unlink()
    assert run_osvos(davis_root, out, ckpts["parent"], "overlay=null", "score=false")["skipped"] == ["a"]
    # another one-shot setting redoes both
    assert run_osvos(davis_root, out, ckpts["parent"], "overlay=null", "score=false", "method.finetune.steps=2")["skipped"] == []


def test_osvos_with_boundary_snapping_on_davis2016(tmp_path, ckpts):
    root = write_davis_tree(tmp_path / "DAVIS", {"c": 4}, size=(32, 40), n_objects=1, year="2016", split="val")
    out = tmp_path / "out"
    run_osvos(root, out, ckpts["parent"], "method.boundary_snapping=true", f"method.contour_ckpt={ckpts['contour']}", "overlay=null",
              task="davis2016")  # fmt: skip
    pred = np.stack([read_indexed_png(p) for p in sorted((out / "results" / "c").glob("*.png"))])
    assert pred.shape == (4, 32, 40) and set(np.unique(pred).tolist()) <= {0, 1}


def test_snapped_frames_are_the_unsnapped_labels_on_the_contour_superpixels(ckpts):
    from corrflow.propagation.boundary_snapping import snap_to_contours

    parent, contour = load_segmenter(ckpts["parent"], kind="osvos"), load_segmenter(ckpts["contour"], kind="osvos_contour")
    opt = partial(torch.optim.Adam, lr=1e-3)
    plain = OSVOSVideoSegmenter(parent, steps=2, optimizer=opt)
    snap = OSVOSVideoSegmenter(parent, steps=2, optimizer=opt, contour=contour, n_segments=10)
    frames, masks = moving_objects(2, (32, 48), n_objects=2, seed=1)
    images = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    onehot = torch.stack([torch.from_numpy(masks[0] == i).float() for i in range(3)])
    plain.step(images[0], onehot)
    snap.step(images[0], onehot)
    ids = plain.step(images[1]).argmax(0)
    with torch.no_grad():
        cmap = torch.sigmoid(contour(images[1][None]).fused[0, 0])
    expected = snap_to_contours(ids, cmap, n_segments=10)
    torch.testing.assert_close(snap.step(images[1]).argmax(0), expected)


def test_snapping_with_short_side_snaps_at_the_frame_size(ckpts, tmp_path):
    """docs/osvos.md's setting (method.short_side with snapping): the objects' probabilities and the
    contour map are computed at the working size and resized back, and the snapping happens at the
    frame's size: equal to those steps by hand; and the run writes frame-size labels."""
    from corrflow.propagation.boundary_snapping import snap_to_contours
    from corrflow.propagation.working_size import WorkingSize

    parent, contour = load_segmenter(ckpts["parent"], kind="osvos"), load_segmenter(ckpts["contour"], kind="osvos_contour")
    opt = partial(torch.optim.Adam, lr=1e-3)
    plain = OSVOSVideoSegmenter(parent, steps=2, optimizer=opt, short_side=20)
    snap = OSVOSVideoSegmenter(parent, steps=2, optimizer=opt, contour=contour, n_segments=10, short_side=20)
    frames, masks = moving_objects(2, (40, 64), n_objects=2, seed=1)
    images = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    onehot = torch.stack([torch.from_numpy(masks[0] == i).float() for i in range(3)])
    plain.step(images[0], onehot)
    snap.step(images[0], onehot)
    ids = plain.step(images[1]).argmax(0)  # unsnapped labels, already at 40 x 64
    size = WorkingSize(20)
    with torch.no_grad():
        cmap = size.back(torch.sigmoid(contour(size.frame(images[1])[None]).fused[0]), (40, 64))[0]
    got = snap.step(images[1])
    assert got.shape == (3, 40, 64)
    torch.testing.assert_close(got.argmax(0), snap_to_contours(ids, cmap, n_segments=10))
    root = write_davis_tree(tmp_path / "DAVIS", {"c": 3}, size=(40, 64), n_objects=1, year="2016", split="val")
    run_osvos(root, tmp_path / "out", ckpts["parent"], "method.boundary_snapping=true", f"method.contour_ckpt={ckpts['contour']}",
              "method.short_side=20", "overlay=null", task="davis2016")  # fmt: skip
    pred = np.stack([read_indexed_png(p) for p in sorted((tmp_path / "out" / "results" / "c").glob("*.png"))])
    assert pred.shape == (3, 40, 64) and set(np.unique(pred).tolist()) <= {0, 1}


def test_batched_frames_equal_one_at_a_time(ckpts):
    """step_many on a batch (cut into batch_frames chunks) gives what step gives frame by frame."""
    parent = load_segmenter(ckpts["parent"], kind="osvos")
    opt = partial(torch.optim.Adam, lr=1e-3)
    frames, masks = moving_objects(6, (32, 48), n_objects=2, seed=2)
    images = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    onehot = torch.stack([torch.from_numpy(masks[0] == i).float() for i in range(3)])
    one, many = OSVOSVideoSegmenter(parent, steps=2, optimizer=opt, batch_frames=1), OSVOSVideoSegmenter(parent, steps=2, optimizer=opt, batch_frames=2)
    one.step(images[0], onehot)
    many.step(images[0], onehot)
    singles = torch.stack([one.step(f) for f in images[1:]])
    batched = many.step_many(images[1:])  # 5 frames: chunks of 2, 2, 1
    assert batched.shape == (5, 3, 32, 48)
    torch.testing.assert_close(batched, singles, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="batch_frames"):
        OSVOSVideoSegmenter(parent, optimizer=opt, batch_frames=0)


def test_short_side_fine_tunes_and_segments_resized_frames(ckpts):
    """method.short_side: the copy is fine-tuned on the resized first frame and area-resized masks,
    frames are segmented resized, and the probabilities come back at the frame's size: equal to
    doing those steps by hand."""
    parent = load_segmenter(ckpts["parent"], kind="osvos")
    opt = partial(torch.optim.Adam, lr=1e-3)
    frames, masks = moving_objects(3, (40, 64), n_objects=1, seed=6)
    images = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    onehot = torch.stack([torch.from_numpy(masks[0] == i).float() for i in range(2)])
    seg = OSVOSVideoSegmenter(parent, steps=2, optimizer=opt, short_side=20, seed=3)
    assert torch.equal(seg.step(images[0], onehot), onehot)  # the first frame: its own labels
    out = seg.step(images[1])
    assert out.shape == (2, 40, 64)

    from corrflow.utils.seeding import derive_seed

    small = torch.nn.functional.interpolate(images[:2], size=(20, 32), mode="bilinear", antialias=True, align_corners=False)
    mask = torch.nn.functional.interpolate(onehot[None, 1:], size=(20, 32), mode="area")[0, 0]
    tuned = one_shot_finetune(parent, small[0], mask, steps=2, optimizer=opt, seed=derive_seed(3, "osvos-object", 0))
    with torch.no_grad():
        prob = torch.sigmoid(tuned(small[1][None]).fused)
    prob = torch.nn.functional.interpolate(prob, size=(40, 64), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(out, combine_objects(prob, threshold=0.5), atol=1e-6, rtol=0)


def test_run_batches_osvos_frames_without_changing_the_predictions(davis_root, ckpts, tmp_path):
    """tools/propagate.py method=osvos: method.batch_frames=3 writes the PNGs that batch_frames=1 does."""
    a, b = tmp_path / "one", tmp_path / "three"
    run_osvos(davis_root, a, ckpts["parent"], "method.batch_frames=1", "overlay=null", "score=false")
    run_osvos(davis_root, b, ckpts["parent"], "method.batch_frames=3", "overlay=null", "score=false", "method.short_side=16")
    run_osvos(davis_root, b / "same", ckpts["parent"], "method.batch_frames=3", "overlay=null", "score=false")
    for seq in ("a", "b"):
        for png in sorted((a / "results" / seq).glob("*.png")):
            np.testing.assert_array_equal(read_indexed_png(png), read_indexed_png(b / "same" / "results" / seq / png.name))
    small = sorted((b / "results" / "a").glob("*.png"))
    assert len(small) == 5 and read_indexed_png(small[1]).shape == (32, 48)  # short_side: still the frame's size


def test_fine_tuned_weights_are_kept_only_when_asked(davis_root, ckpts, tmp_path):
    """method.keep_weights=true: <output_dir>/osvos_weights/<video>.pt, one state dict an object, that
    loads into the parent's architecture; off by default; neither it nor batch_frames changes the
    fingerprint (a run resumes)."""
    from corrflow.propagation.run import fingerprint

    out = tmp_path / "out"
    run_osvos(davis_root, out, ckpts["parent"], "overlay=null", "score=false")
    assert not (out / "osvos_weights").exists()
    (out / "results" / "a.done").unlink()
    result = run_osvos(davis_root, out, ckpts["parent"], "overlay=null", "score=false", "method.keep_weights=true", "method.batch_frames=2")
    assert result["skipped"] == ["b"]
    kept = torch.load(out / "osvos_weights" / "a.pt", weights_only=True)
    assert len(kept["objects"]) == 2  # the video's two objects
    net = load_segmenter(ckpts["parent"], kind="osvos")
    net.load_state_dict(kept["objects"][1])
    assert any(not torch.equal(v, net.state_dict()[k]) for k, v in load_segmenter(ckpts["parent"], kind="osvos").state_dict().items())
    base = compose_cfg("task=davis", "method=osvos", f"ckpt={ckpts['parent']}")
    assert fingerprint(base) == fingerprint(compose_cfg("task=davis", "method=osvos", f"ckpt={ckpts['parent']}", "method.keep_weights=true"))
    assert fingerprint(base) != fingerprint(compose_cfg("task=davis", "method=osvos", f"ckpt={ckpts['parent']}", "method.short_side=64"))
    # OSVOS uses no protocol: another protocol (another label_resize in the task) is the same run
    assert fingerprint(base) == fingerprint(compose_cfg("task=davis", "method=osvos", f"ckpt={ckpts['parent']}", "protocol=corrflow"))
    assert base.task.targets.label_resize != compose_cfg("task=davis", "method=osvos", "protocol=corrflow").task.targets.label_resize


def test_output_folders_name_method_and_snapping():
    base = compose_cfg("task=davis", "method=osvos", "ckpt=/x/logs/osvos_parent/runs/2024-05-01_10-00-00/checkpoints/final.ckpt")
    assert base.output_dir.endswith("/propagate/davis-osvos-2024-05-01_10-00-00-final")
    snap = compose_cfg("task=davis2016", "method=osvos", "ckpt=/x/p.ckpt", "method.boundary_snapping=true")
    assert snap.output_dir.endswith("/propagate/davis2016-osvos-snap-p")


# -- bad input ---------------------------------------------------------------------------------

def test_wrong_kinds_of_checkpoint_say_what_to_pass(davis_root, ckpts, tmp_path):
    out = tmp_path / "out"
    cases = [
        ((ckpts["pre"],), r"pre\.ckpt is a corrflow pretraining checkpoint .*not an OSVOS parent checkpoint: .*experiment=osvos_parent model\.backbone\.init="),
        ((ckpts["stm"],), r"stm\.ckpt is an STM segmenter checkpoint, not an OSVOS parent checkpoint: segment with it by method=stm"),
        ((ckpts["contour"],), r"contour\.ckpt is an OSVOS contour-branch checkpoint, not a parent one: pass it as method\.contour_ckpt="),
        ((ckpts["parent"], "method.boundary_snapping=true", f"method.contour_ckpt={ckpts['parent']}"),
         r"method\.contour_ckpt=.*parent\.ckpt is an OSVOS parent checkpoint, not a contour branch"),
        ((ckpts["parent"], "method.boundary_snapping=true"), r"boundary_snapping=true needs the contour branch: method\.contour_ckpt="),
        ((tmp_path / "gone.ckpt",), r"gone\.ckpt: an OSVOS parent checkpoint not found"),
    ]  # fmt: skip
    for (ckpt, *extra), pattern in cases:
        with pytest.raises((ValueError, FileNotFoundError), match=pattern):
            run_osvos(davis_root, out, ckpt, *extra)
    broken = torch.load(ckpts["parent"], weights_only=False)
    broken["state_dict"]["net.fuse.weight"] = broken["state_dict"]["net.fuse.weight"][:, :8]  # 2 sides' worth, not 3
    del broken["state_dict"]["net.score.layer3.bias"]
    torch.save(broken, tmp_path / "broken.ckpt")
    with pytest.raises(ValueError, match=r"broken\.ckpt: the weights do not fit; missing \(1\): score\.layer3\.bias; shape differs \(1\): fuse\.weight"):
        run_osvos(davis_root, out, tmp_path / "broken.ckpt")
    with pytest.raises(ValueError, match=r"method=osvos needs an OSVOS parent checkpoint: ckpt="):
        propagate(compose_cfg("task=davis", "method=osvos", f"data.root={davis_root}", f"output_dir={out}"))
    jhmdb = make_jhmdb_tree(tmp_path / "JHMDB")
    with pytest.raises(ValueError, match=r"method=osvos segments object masks.*KeypointTargets"):
        propagate(compose_cfg("task=jhmdb", "method=osvos", f"ckpt={ckpts['parent']}", f"data.root={jhmdb}", f"output_dir={out}"))
    assert not out.exists()  # nothing written by a run whose inputs fail


@pytest.mark.slow
def test_entry_script_wrong_checkpoint_is_one_line(davis_root, ckpts, tmp_path):
    from tests.test_tools_propagate import REPO
    from tests.test_utils_cli import assert_one_clear_line, run_tool

    proc = run_tool(
        REPO / "tools" / "propagate.py", "task=davis", "method=osvos", f"ckpt={ckpts['pre']}", f"data.root={davis_root}",
        f"output_dir={tmp_path / 'out'}", "progress=false", f"hydra.run.dir={tmp_path / 'hydra'}",
    )  # fmt: skip
    assert_one_clear_line(proc, r"^error: ckpt=.*pre\.ckpt is a corrflow pretraining checkpoint .*experiment=osvos_parent")
    assert not (tmp_path / "out").exists()
