"""OSVOSNet on the SegmentationBackbone's side stages: for every backbone at odd sizes, the sides and
the fused output (values and every parameter's gradient) against an explicit pad-upsample-score /
concatenate-fuse-crop composition in float64; the stage maps against the encoder run by hand; three
distinct sides on the CRW variant (whose identity head would repeat layer3), the
training targets (foreground, boundaries), and the checkpoint round trip (old four-side CRW
checkpoints included)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from corrflow.models.backbone import SegmentationBackbone
from corrflow.models.segmenters import OSVOSNet, foreground_target, mask_boundaries
from corrflow.utils.grid import pad_to_stride

HAS_LITE = importlib.util.find_spec("efficientnet_lite_pytorch") is not None

pytestmark = pytest.mark.usefixtures("one_thread")


def backbone(arch: str) -> SegmentationBackbone:
    return SegmentationBackbone(arch=arch, finest_stride=4, min_stride=4, max_stride=32)


@pytest.mark.parametrize(
    ("arch", "stages", "strides"),
    [
        ("corrflow", ("layer2", "layer3", "layer4", "head"), (4, 4, 4, 4)),
        ("crw", ("layer1", "layer2", "layer3"), (4, 8, 8)),  # the head is the identity: it would repeat layer3
        pytest.param("lite0", ("blocks.2", "blocks.4", "blocks.10", "blocks.15"), (4, 8, 16, 32),
                     marks=pytest.mark.skipif(not HAS_LITE, reason="needs efficientnet-lite-pytorch")),
    ],
)  # fmt: skip
@pytest.mark.parametrize("size", [(33, 47), (29, 50)])
def test_sides_and_fused_at_odd_sizes_equal_the_explicit_composition_float64(arch, stages, strides, size):
    """At sizes that are not multiples of the stride: pad, upsample each side stage's prepared map
    to the padded size, score each (sides) and fuse their concatenation, crop. Values, and the
    gradients of every parameter (so no side is cut off the graph), against that composition."""
    torch.manual_seed(0)
    net = OSVOSNet(backbone=backbone(arch), side_channels=4).double().eval()
    assert net.stages == stages and tuple(net.backbone.stage_strides[s] for s in stages) == strides
    assert net.config == {"n_sides": len(stages), "side_channels": 4, "stages": list(stages)}
    with torch.no_grad():
        net.fuse.bias.fill_(0.7)
    h, w = size
    x = torch.rand(2, 3, h, w, dtype=torch.float64)
    out = net(x)
    padded = pad_to_stride(x, net.stride)
    feats = net.backbone.forward_stages(padded)
    ups = [F.interpolate(net.prep[net._key(s)](feats[s]), size=padded.shape[-2:], mode="bilinear", align_corners=False) for s in net.stages]
    fused = net.fuse(torch.cat(ups, 1))[..., :h, :w]
    sides = torch.cat([net.score[net._key(s)](u) for s, u in zip(net.stages, ups, strict=True)], 1)[..., :h, :w]
    assert out.sides.shape == (2, len(stages), h, w) and out.fused.shape == (2, 1, h, w)
    torch.testing.assert_close(out.fused, fused, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.sides, sides, rtol=1e-10, atol=1e-10)
    g = torch.Generator().manual_seed(1)
    ws, wf = torch.randn(sides.shape, generator=g, dtype=torch.float64), torch.randn(fused.shape, generator=g, dtype=torch.float64)
    names, params = zip(*net.named_parameters(), strict=True)
    got = torch.autograd.grad((out.sides * ws).sum() + (out.fused * wf).sum(), params, allow_unused=True)
    want = torch.autograd.grad((sides * ws).sum() + (fused * wf).sum(), params, allow_unused=True)
    for name, a, b in zip(names, got, want, strict=True):
        if name.startswith(("prep", "score", "fuse")):
            assert b is not None and b.abs().sum() > 0, name  # the composition reaches every side
        assert (a is None) == (b is None), name
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=lambda m, n=name: f"d{n}: {m}")


def test_stage_maps_are_the_encoders_stages_run_by_hand():
    """forward_stages hands out each named stage's output (the CRW encoder's layers run by hand)
    at its advertised stride and width, and the stride maps are the last stage at each stride."""
    bb = backbone("crw").eval()
    e = bb.encoder
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        feats = bb.forward_stages(x)
        want = {"layer1": e.layer1(e.maxpool(e.relu(e.bn1(e.conv1((x - e.mean) / e.std)))))}
        want["layer2"] = e.layer2(want["layer1"])
        want["layer3"] = want["head"] = e.layer3(want["layer2"])
        maps = bb(x)
    assert list(feats) == list(bb.side_stages) == list(want)
    for name, f in feats.items():
        s = bb.stage_strides[name]
        assert f.shape == (1, bb.stage_channels[name], 32 // s, 48 // s)
        torch.testing.assert_close(f, want[name], msg=lambda m, n=name: f"{n}: {m}")
    torch.testing.assert_close(maps[4], want["layer1"])
    torch.testing.assert_close(maps[8], want["head"])


def test_crw_sides_read_three_distinct_tensors():
    """All side stages of the CRW variant: the head (an identity) hands out layer3's tensor again;
    OSVOS's sides are the distinct ones, every pair of maps different."""
    bb = backbone("crw").eval()
    assert bb.side_stages == ("layer1", "layer2", "layer3", "head") and bb.distinct_side_stages == ("layer1", "layer2", "layer3")
    feats = bb.forward_stages(torch.rand(1, 3, 32, 48))
    assert feats["head"] is feats["layer3"]  # why the head is left out
    net = OSVOSNet(backbone=bb)
    assert net.stages == bb.distinct_side_stages and net.fuse.in_channels == 3 * 16
    maps = [feats[s] for s in net.stages]
    assert all(a.shape != b.shape or not torch.equal(a, b) for i, a in enumerate(maps) for b in maps[i + 1 :])
    corrflow = backbone("corrflow")  # a real head (a 3x3 convolution): every side stage counts
    assert corrflow.distinct_side_stages == corrflow.side_stages == ("layer2", "layer3", "layer4", "head")


def test_stages_by_name():
    bb = backbone("crw")
    net = OSVOSNet(backbone=bb, stages=["layer2", "head"], side_channels=4)
    assert net.stages == ("layer2", "head") and net.config == {"n_sides": 2, "side_channels": 4, "stages": ["layer2", "head"]}
    for bad in (["layer3", "layer2"], ["layer9"], [], ["layer2", "layer2"]):
        with pytest.raises(ValueError, match="stages must be distinct side stages"):
            OSVOSNet(backbone=bb, stages=bad)
    with pytest.raises(ValueError, match="n_sides=3 but 2 stages"):
        OSVOSNet(backbone=bb, stages=["layer2", "head"], n_sides=3)


def test_too_many_sides_names_the_stages():
    with pytest.raises(ValueError, match=r"n_sides=4, but the backbone has 3 distinct side stages \(layer1, layer2, layer3; head only repeats"):
        OSVOSNet(backbone=backbone("crw"), n_sides=4)
    with pytest.raises(ValueError, match="RGB only"):
        OSVOSNet(backbone=SegmentationBackbone(arch="crw", extra_in_channels=2))


def test_targets_foreground_and_boundaries():
    ids = torch.tensor([[[0, 0, 2, 2, 2], [0, 1, 1, 255, 2], [0, 1, 1, 0, 0]]])
    assert foreground_target(ids).tolist() == [[[0, 0, 1, 1, 1], [0, 1, 1, 255, 1], [0, 1, 1, 0, 0]]]
    # hand-computed: a pixel whose 3x3 window (void excluded) holds two labels
    assert mask_boundaries(ids).tolist() == [[[1, 1, 1, 1, 0], [1, 1, 1, 255, 1], [1, 1, 1, 1, 1]]]
    flat = torch.zeros(1, 6, 9, dtype=torch.long)
    flat[0, :, 5:] = 1
    b = mask_boundaries(flat, width=2)
    assert b[0, 0].tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 0]  # two pixels deep on each side of the edge
    assert mask_boundaries(torch.zeros(1, 4, 4, dtype=torch.long)).sum() == 0


def test_checkpoint_round_trip(tmp_path):
    from corrflow.models.segmenters import load_segmenter, segmenter_payload

    torch.manual_seed(0)
    net = OSVOSNet(backbone=backbone("crw"), side_channels=4)
    ckpt = {"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "corrflow": segmenter_payload(net, kind="osvos", prefix="net.")}
    torch.save(ckpt, tmp_path / "o.ckpt")
    loaded = load_segmenter(tmp_path / "o.ckpt", kind="osvos")
    x = torch.rand(1, 3, 24, 40)
    torch.testing.assert_close(loaded(x).fused, net.eval()(x).fused)
    with pytest.raises(ValueError, match="is a OSVOS checkpoint, not a STM one|is an OSVOS checkpoint"):
        load_segmenter(tmp_path / "o.ckpt", kind="stm")


def test_a_four_side_crw_checkpoint_from_before_still_loads(tmp_path):
    """Written before the stages were recorded ({"n_sides": 4, "side_channels": ...}): its sides were
    the last four side stages, the head included; it loads as it was trained."""
    from corrflow.models.segmenters import load_segmenter, segmenter_payload

    torch.manual_seed(0)
    old = OSVOSNet(backbone=backbone("crw"), stages=["layer1", "layer2", "layer3", "head"], side_channels=4)
    payload = segmenter_payload(old, kind="osvos", prefix="net.")
    payload["segmenter"] = {"n_sides": 4, "side_channels": 4}
    torch.save({"state_dict": {f"net.{k}": v for k, v in old.state_dict().items()}, "corrflow": payload}, tmp_path / "old.ckpt")
    loaded = load_segmenter(tmp_path / "old.ckpt", kind="osvos")
    assert loaded.stages == ("layer1", "layer2", "layer3", "head")
    x = torch.rand(1, 3, 24, 40)
    torch.testing.assert_close(loaded(x).fused, old.eval()(x).fused)
