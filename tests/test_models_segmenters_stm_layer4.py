"""STM's ``kv_stage``: keys and values from the CorrFlow encoder's 256-d layer4 pooled to stride 8,
with a stride-8 refinement in the decoder (issue 21, part 3), the default on that encoder
(``auto``, the release's arrangement); ``null`` (the 64-d head pooled to stride 8, one refinement at
stride 4) as before; checkpoints record the setting, and older ones without it load and fine-tune
as they were; a CPU-sized fine-tune through the real tool."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, open_dict

from corrflow.finetune import adopt_checkpoint_architecture, finetune
from corrflow.models.backbone import SegmentationBackbone
from corrflow.models.segmenters import (
    STMInference,
    STMSegmenter,
    load_segmenter,
    segmenter_payload,
    soft_aggregate,
)
from corrflow.models.segmenters.stm import default_kv_stage
from tests.helpers.vos_synthetic import write_davis_tree
from tests.test_finetune import TINY, compose_finetune_cfg  # the CPU-sized fine-tuning settings

pytestmark = pytest.mark.usefixtures("one_thread")


def corrflow_stm(kv_stage: str | None, *, seed: int = 0) -> STMSegmenter:
    torch.manual_seed(seed)
    return STMSegmenter(backbone=SegmentationBackbone(arch="corrflow"), key_dim=8, value_dim=16, decoder_dim=8, kv_stage=kv_stage).eval()


def add_to_output(module: torch.nn.Module, delta: float):
    """A forward hook that shifts ``module``'s output by ``delta`` (returns the handle)."""
    return module.register_forward_hook(lambda _m, _i, out: out + delta)


# -- where the keys and values come from ---------------------------------------------------------
def keys_and_values(net: STMSegmenter, encoder: str, image: torch.Tensor, prob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if encoder == "query":
        query = net.encode_query(image)
        return query.key, query.value
    return net.encode_memory(image, prob)


@torch.no_grad()
@pytest.mark.parametrize("encoder", ["query", "memory"])
def test_layer4_option_reads_layer4_and_the_default_reads_the_head(encoder):
    """Shifting layer4's output moves the keys and values under both options (the head reads
    layer4); shifting the head's output moves them under the default only."""
    image, prob = torch.rand(1, 3, 32, 48), torch.rand(1, 2, 32, 48)
    for kv_stage in ("layer4", None):
        net = corrflow_stm(kv_stage)
        layers = (net.query_encoder if encoder == "query" else net.memory_encoder).encoder
        base = keys_and_values(net, encoder, image, prob)
        moved = {}
        for name in ("head", "layer4"):
            handle = add_to_output(layers.get_submodule(name), 0.5)
            moved[name] = [not torch.allclose(a, b) for a, b in zip(keys_and_values(net, encoder, image, prob), base, strict=True)]
            handle.remove()
        assert moved["layer4"] == [True, True], kv_stage
        assert moved["head"] == ([False, False] if kv_stage == "layer4" else [True, True]), kv_stage


@torch.no_grad()
def test_layer4_keys_are_the_heads_on_layer4_average_pooled_to_stride_8():
    net = corrflow_stm("layer4")
    seen = {}
    handles = [net.query_encoder.encoder.layer4.register_forward_hook(lambda _m, _i, out: seen.__setitem__("q", out)),
               net.memory_encoder.encoder.layer4.register_forward_hook(lambda _m, _i, out: seen.__setitem__("m", out))]  # fmt: skip
    head_calls = []
    handles.append(net.memory_encoder.encoder.head.register_forward_hook(lambda *_: head_calls.append(1)))
    image, prob = torch.rand(1, 3, 32, 48), torch.rand(1, 1, 32, 48)
    query = net.encode_query(image)
    mk, mv = net.encode_memory(image, prob)
    for h in handles:
        h.remove()
    assert seen["q"].shape == (1, 256, 8, 12) and seen["m"].shape == (1, 256, 8, 12)  # layer4 at stride 4
    # 2x2 averages written out (not avg_pool2d): stride 8
    pooled = {k: v.unflatten(2, (4, 2)).unflatten(4, (6, 2)).mean(dim=(3, 5)) for k, v in seen.items()}
    torch.testing.assert_close(query.key, net.query_key(pooled["q"]))
    torch.testing.assert_close(query.value, net.query_value(pooled["q"]))
    torch.testing.assert_close(mk[:, 0], net.memory_key(pooled["m"]))
    torch.testing.assert_close(mv[:, 0], net.memory_value(pooled["m"]))
    assert query.key.shape == (1, 8, 4, 6) and mk.shape == (1, 1, 8, 4, 6)
    assert head_calls == []  # the memory encoder stops at layer4
    assert net.query_key.in_channels == net.memory_key.in_channels == 256
    assert corrflow_stm(None).query_key.in_channels == 64


def test_kv_stage_must_be_a_side_stage_of_the_backbone():
    with pytest.raises(ValueError, match=r"side stages \(layer1, layer2, layer3, head\), got 'layer4'"):
        STMSegmenter(backbone=SegmentationBackbone(arch="crw"), key_dim=8, value_dim=16, decoder_dim=8, kv_stage="layer4")
    with pytest.raises(ValueError, match="got 'layer5'"):
        STMSegmenter(backbone=SegmentationBackbone(arch="corrflow"), key_dim=8, value_dim=16, decoder_dim=8, kv_stage="layer5")


# -- the decoder's stride-8 refinement -----------------------------------------------------------
def reference_logit(net: STMSegmenter, image: torch.Tensor, mk: torch.Tensor, mv: torch.Tensor) -> torch.Tensor:
    """Float64, written out from the encoder's layers: keys and values on layer4 pooled to stride
    8, a softmax read over every memory cell, then fuse -> refine with the head pooled to stride 8
    -> refine with the head at stride 4 -> the 1-channel logit at stride 4 (one object).
    image (1, 3, H, W) with H, W multiples of 8; mk (1, T, Ck, h, w), mv (1, T, Cv, h, w)."""
    enc, dec = net.query_encoder.encoder, net.decoder

    def conv(m, x):
        return F.conv2d(x, m.weight, m.bias, padding=1)

    def res(block, x):
        return x + conv(block.conv2, F.relu(conv(block.conv1, F.relu(x))))

    def pool2(x):
        return x.unflatten(2, (x.shape[2] // 2, 2)).unflatten(4, (x.shape[3] // 2, 2)).mean(dim=(3, 5))

    x = enc.relu(enc.bn1(enc.conv1(image)))
    layer4 = enc.layer4(enc.layer3(enc.layer2(enc.layer1(x))))
    head = enc.head(layer4)
    deep = pool2(layer4)
    qk, qv = conv(net.query_key, deep), conv(net.query_value, deep)
    ck, h, w = qk.shape[1:]
    keys = mk[0].permute(0, 2, 3, 1).reshape(-1, ck)  # (THW, Ck)
    vals = mv[0].permute(0, 2, 3, 1).reshape(keys.shape[0], -1)
    weights = torch.softmax(qk[0].reshape(ck, -1).T @ keys.T / math.sqrt(ck), dim=1)  # (hw, THW)
    read = (weights @ vals).T.reshape(1, -1, h, w)
    y = res(dec.fuse[1], conv(dec.fuse[0], torch.cat([read, qv], dim=1)))
    for stride, skip in ((8, pool2(head)), (4, head)):
        proj = dec.skip_proj[str(stride)]
        skip = res(proj[1], conv(proj[0], skip))
        if y.shape[-2:] != skip.shape[-2:]:
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        y = res(dec.merge[str(stride)], skip + y)
    return conv(dec.pred, F.relu(y))


@torch.no_grad()
def test_layer4_option_matches_a_float64_reference_with_the_stride_8_refinement():
    """Caught by the reference: a copy whose decoder drops the stride-8 refinement (the default's
    decoder shape) and a copy whose stride-8 refinement reads the head subsampled, not averaged."""
    net = corrflow_stm("layer4").double()
    assert net.decoder.skip_strides == [8, 4] and corrflow_stm(None).decoder.skip_strides == [4]
    assert net.decoder.skip_proj["8"][0].in_channels == 64  # the head pooled, not layer4
    g = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 32, 48, generator=g, dtype=torch.float64)
    mk = torch.randn(1, 1, 2, 8, 4, 6, generator=g, dtype=torch.float64)  # (B, N, T, Ck, h, w)
    mv = torch.randn(1, 1, 2, 16, 4, 6, generator=g, dtype=torch.float64)
    expected = reference_logit(net, image, mk[:, 0], mv[:, 0])
    assert expected.shape == (1, 1, 8, 12)

    def decoder_logit(model: STMSegmenter) -> tuple[torch.Tensor, torch.Tensor]:
        seen = {}
        handle = model.decoder.register_forward_hook(lambda _m, _i, out: seen.__setitem__("logit", out))
        logits = model.segment(model.encode_query(image), mk, mv)
        handle.remove()
        return seen["logit"], logits

    logit, logits = decoder_logit(net)
    torch.testing.assert_close(logit, expected, rtol=1e-10, atol=1e-10)
    up = F.interpolate(expected, size=(32, 48), mode="bilinear", align_corners=False)
    torch.testing.assert_close(logits.double(), soft_aggregate(torch.sigmoid(up)), rtol=1e-5, atol=1e-5)

    no_stride_8 = copy.deepcopy(net)
    no_stride_8.decoder.skip_strides = [4]
    wrong_skip = copy.deepcopy(net)  # the stride-8 refinement reads the head subsampled, not averaged
    project = wrong_skip.decoder.project_skips
    wrong_skip.decoder.project_skips = lambda feats: project({**feats, 8: feats[4][..., ::2, ::2]})
    for broken in (no_stride_8, wrong_skip):
        got, _ = decoder_logit(broken)
        assert got.shape == expected.shape and (got - expected).abs().max() > 1e-3


def test_layer4_option_gradients_and_no_idle_trainable_parameter():
    """Every trainable parameter gets a gradient (DDP's rule); the memory encoder's layers after
    layer4, which it does not run, are frozen copies."""
    net = corrflow_stm("layer4").train()
    frozen = sorted(n for n, p in net.named_parameters() if not p.requires_grad)
    assert frozen == ["memory_encoder.encoder.head.bias", "memory_encoder.encoder.head.weight"]
    b, t, n, h, w = 2, 2, 2, 30, 45
    logits = net(torch.rand(b, 3, h, w), torch.rand(b, t, 3, h, w), torch.rand(b, t, n, h, w))
    assert logits.shape == (b, n + 1, h, w)
    F.cross_entropy(logits, torch.randint(0, n + 1, (b, h, w))).backward()
    idle = [name for name, p in net.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert idle == []
    assert all(p.grad is None for n, p in net.named_parameters() if n in frozen)


# -- checkpoints ---------------------------------------------------------------------------------
def save_fake_ckpt(path: Path, net: STMSegmenter, *, drop: tuple[str, ...] = ()) -> Path:
    payload = segmenter_payload(net, kind="stm", prefix="net.")
    for key in drop:
        del payload["segmenter"][key]
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "corrflow": payload}, path)
    return path


@torch.no_grad()
def test_checkpoints_record_kv_stage_and_older_ones_load_as_before(tmp_path):
    args = (torch.rand(1, 3, 24, 40), torch.rand(1, 2, 3, 24, 40), torch.rand(1, 2, 1, 24, 40))
    net = corrflow_stm("layer4", seed=1)
    with torch.no_grad():
        net.memory_encoder.extra_conv.weight.normal_()  # as after training
    path = save_fake_ckpt(tmp_path / "layer4.ckpt", net)
    assert torch.load(path, weights_only=False)["corrflow"]["segmenter"]["kv_stage"] == "layer4"
    loaded = load_segmenter(path)
    assert loaded.kv_stage == "layer4" and loaded.decoder.skip_strides == [8, 4]
    assert not loaded.memory_encoder.encoder.head.weight.requires_grad
    torch.testing.assert_close(loaded(*args), net(*args), rtol=0, atol=0)

    # written before kv_stage existed: no such key; rebuilt as the default, outputs unchanged
    old = corrflow_stm(None, seed=2)
    old_path = save_fake_ckpt(tmp_path / "old.ckpt", old, drop=("kv_stage",))
    assert set(torch.load(old_path, weights_only=False)["corrflow"]["segmenter"]) == {"key_dim", "value_dim", "decoder_dim", "topk"}
    loaded_old = load_segmenter(old_path)
    assert loaded_old.kv_stage is None and loaded_old.decoder.skip_strides == [4] and loaded_old.query_key.in_channels == 64
    torch.testing.assert_close(loaded_old(*args), old(*args), rtol=0, atol=0)


@pytest.mark.parametrize(("arch", "expected", "key_in"), [("corrflow", "layer4", 256), ("crw", None, 256), ("lite0", None, 112)])
def test_auto_default_is_the_releases_arrangement_on_each_backbone(arch, expected, key_in):
    """The default reads the deepest stage wider than the coarsest map below the key stride: the
    CorrFlow encoder's layer4 (its coarsest map is the 64-d head, pooled); the CRW variant's and
    Lite0's coarsest maps are already their deepest wide stage. The config records the choice."""
    backbone = SegmentationBackbone(arch=arch)
    assert default_kv_stage(backbone) == expected
    net = STMSegmenter(backbone=backbone, key_dim=8, value_dim=16, decoder_dim=8)
    assert net.kv_stage == expected and net.config["kv_stage"] == expected
    assert net.query_key.in_channels == net.memory_key.in_channels == key_in
    assert STMSegmenter(backbone=backbone, key_dim=8, value_dim=16, decoder_dim=8, kv_stage=None).config["kv_stage"] is None


def test_the_config_default_is_auto_and_an_old_checkpoint_keeps_its_head_keys_when_fine_tuned(tmp_path):
    """conf/model/stm.yaml asks for ``auto``; fine-tuning from a checkpoint written before
    ``kv_stage`` was recorded builds the head-keyed network it holds (not auto's layer4), and one
    that records layer4 builds layer4 whatever the config says."""
    cfg = compose_finetune_cfg(tmp_path, ["experiment=stm", "model.backbone.arch=corrflow"])
    assert cfg.model.net.kv_stage == "auto"
    old = {"kind": "stm", "backbone": {"arch": "corrflow"}, "segmenter": {"key_dim": 8, "value_dim": 16, "decoder_dim": 8, "topk": None}}
    changed = adopt_checkpoint_architecture(cfg, old)
    assert cfg.model.net.kv_stage is None and "model.net.kv_stage=None" in changed
    cfg = compose_finetune_cfg(tmp_path, ["experiment=stm", "model.backbone.arch=corrflow", "model.net.kv_stage=null"])
    adopt_checkpoint_architecture(cfg, {**old, "segmenter": {**old["segmenter"], "kv_stage": "layer4"}})
    assert cfg.model.net.kv_stage == "layer4"


# -- a CPU-sized fine-tune through the real tool -------------------------------------------------
def finetune_cfg(tmp_path: Path, davis: Path, *overrides: str, out: str) -> DictConfig:
    cfg = compose_finetune_cfg(tmp_path, [f"data.root={davis}", *TINY, "model.backbone.arch=corrflow", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / out)
    return cfg


def test_finetune_static_then_video_with_layer4_keys_and_segment(tmp_path):
    """experiment=stm_static with model.net.kv_stage=layer4 on the CorrFlow encoder, then
    experiment=stm from its checkpoint alone (the config left at the default kv_stage: the
    checkpoint's setting is adopted), then the final checkpoint segments a video."""
    davis = write_davis_tree(tmp_path / "davis", {"a": 8, "b": 6}, size=(32, 40))
    _, static = finetune(finetune_cfg(tmp_path, davis, "experiment=stm_static", "model.net.kv_stage=layer4", out="static"))
    assert static["trainer"].global_step == 2 and static["model"].net.kv_stage == "layer4"
    weights = {k: v.clone() for k, v in static["model"].state_dict().items()}
    _, video = finetune(finetune_cfg(tmp_path, davis, "experiment=stm", f"ckpt_path={static['final_ckpt']}", "model.optimizer.lr=0", out="video"))
    net = video["model"].net
    assert net.kv_stage == "layer4" and net.decoder.skip_strides == [8, 4] and video["trainer"].global_step == 2
    for k, v in video["model"].state_dict().items():
        assert torch.equal(v, weights[k]), k  # lr 0: stage 1's weights, loaded exactly
    loaded = load_segmenter(video["final_ckpt"])
    assert loaded.config == net.config and loaded.config["kv_stage"] == "layer4"
    state = STMInference(loaded, every=2, max_frames=3)
    frames = torch.rand(4, 3, 32, 40)
    mask = np.zeros((32, 40), np.uint8)
    mask[8:20, 10:30] = 1
    state.step(frames[0], mask)
    for t in range(1, 4):
        probs = state.step(frames[t])
        assert probs.shape == (2, 32, 40)
        torch.testing.assert_close(probs.sum(0), torch.ones(32, 40))
