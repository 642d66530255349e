"""STM: the memory read against float64, soft aggregation, shapes and gradients, bounded memory,
and the segmenter checkpoint."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from corrflow.models.backbone import SegmentationBackbone
from corrflow.models.checkpoint import encoder_payload, load_encoder
from corrflow.models.encoder import corrflow_encoder
from corrflow.models.segmenters import STMInference, STMSegmenter, load_segmenter, memory_read, segmenter_payload, soft_aggregate
from tests.helpers.synthetic import moving_blob_frames

pytestmark = pytest.mark.usefixtures("one_thread")


def narrow_stm(arch: str = "crw", **kw) -> STMSegmenter:
    torch.manual_seed(0)
    return STMSegmenter(backbone=SegmentationBackbone(arch=arch), key_dim=8, value_dim=16, decoder_dim=8, **kw)


def reference_read(qk, mk, mv, topk=None):
    """Float64, written out: per batch and query position, a softmax over the T*H*W memory cells."""
    qk, mk, mv = qk.double(), mk.double(), mv.double()
    b, ck, h, w = qk.shape
    out = torch.zeros(b, mv.shape[2], h, w, dtype=torch.float64)
    for i in range(b):
        keys = mk[i].permute(0, 2, 3, 1).reshape(-1, ck)  # (THW, Ck)
        vals = mv[i].permute(0, 2, 3, 1).reshape(keys.shape[0], -1)
        for y in range(h):
            for x in range(w):
                logits = keys @ qk[i, :, y, x] / math.sqrt(ck)
                if topk is not None:
                    cut = torch.sort(logits, descending=True).values[topk - 1]
                    logits = torch.where(logits >= cut, logits, torch.tensor(-math.inf, dtype=torch.float64))
                out[i, :, y, x] = torch.softmax(logits, 0) @ vals
    return out


@pytest.mark.parametrize("topk", [None, 1, 5, 10_000])
def test_memory_read_matches_float64_reference(topk):
    g = torch.Generator().manual_seed(1)
    qk = torch.randn(2, 6, 3, 4, generator=g)
    mk = torch.randn(2, 3, 6, 2, 5, generator=g)  # T=3 frames of another size
    mv = torch.randn(2, 3, 7, 2, 5, generator=g)
    out = memory_read(qk, mk, mv, topk=topk, chunk_size=5)  # chunks that do not divide the 12 queries
    assert out.shape == (2, 7, 3, 4)
    torch.testing.assert_close(out.double(), reference_read(qk, mk, mv, topk if topk and topk < 30 else None), rtol=1e-5, atol=1e-5)
    if topk == 1:  # the single nearest cell's value, exactly
        assert torch.allclose(out, reference_read(qk, mk, mv, 1).float(), atol=1e-6)


@pytest.mark.parametrize("topk", [None, 3])
def test_memory_read_gradients_match_the_float64_reference_and_bad_shapes(topk):
    g = torch.Generator().manual_seed(2)
    leaves = [torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True) for shape in ((1, 4, 2, 3), (1, 2, 4, 2, 2), (1, 2, 3, 2, 2))]
    weight = torch.randn(1, 3, 2, 3, generator=g, dtype=torch.float64)
    got = torch.autograd.grad((memory_read(*leaves, topk=topk, chunk_size=4) * weight).sum(), leaves)
    want = torch.autograd.grad((reference_read(*leaves, topk=topk) * weight).sum(), leaves)
    for name, a, b in zip(("query key", "memory key", "memory value"), got, want, strict=True):
        assert b.abs().sum() > 0, name
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=lambda m, n=name: f"d{n}: {m}")
    qk, mk, mv = leaves
    with pytest.raises(ValueError, match="memory_key must be"):
        memory_read(qk, mk[:, :, :3], mv)


def test_soft_aggregation_hand_computed_and_sums_to_one():
    # one object at p = 0.5: background 0.5, both logit-odds 0 -> 0.5 / 0.5
    logits = soft_aggregate(torch.full((1, 1, 1, 1), 0.5))
    torch.testing.assert_close(logits.softmax(1).flatten(), torch.tensor([0.5, 0.5]))
    # two objects 0.9 and 0.2: background 0.1 * 0.8 = 0.08; softmax of the logit-odds
    p = torch.tensor([0.08, 0.9, 0.2], dtype=torch.float64)
    odds = p / (1 - p)
    expected = odds / odds.sum()
    got = soft_aggregate(torch.tensor([0.9, 0.2]).view(1, 2, 1, 1)).softmax(1).flatten().double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # random maps, absent objects: sums to one, absent objects get exactly 0
    probs = torch.rand(3, 4, 5, 6)
    valid = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
    out = soft_aggregate(probs, valid=valid).softmax(1)
    torch.testing.assert_close(out.sum(1), torch.ones(3, 5, 6))
    assert torch.all(out[1, [2, 4]] == 0) and torch.all(out[2, 2:] == 0)
    # an absent object does not enter the background: sample 2 equals a one-object aggregation
    torch.testing.assert_close(out[2, :2], soft_aggregate(probs[2:, :1]).softmax(1)[0])


@pytest.mark.parametrize("arch", ["crw", "corrflow"])
def test_stm_follows_object_order_ignores_absent_objects_and_reads_its_inputs(arch):
    """At a size that is not a multiple of the stride, in eval mode, with the memory encoder's
    mask channels trained-looking (at zero it would ignore the masks): permuting the objects
    permutes the output's object channels; an absent object's mask changes nothing and its
    probability is 0; one sample's inputs do not reach another's output; changing a memory frame,
    or one object's mask in it, changes the output."""
    net = narrow_stm(arch).eval()
    with torch.no_grad():
        net.memory_encoder.extra_conv.weight.normal_(0, 0.2, generator=torch.Generator().manual_seed(1))
    assert net.stride == 8 and net.output_stride == 4
    g = torch.Generator().manual_seed(2)
    b, t, n, h, w = 2, 2, 3, 30, 45  # not multiples of the stride: padded and cropped
    query, images, probs = torch.rand(b, 3, h, w, generator=g), torch.rand(b, t, 3, h, w, generator=g), torch.rand(b, t, n, h, w, generator=g)
    valid = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    run = torch.no_grad()(lambda *a, valid=valid: net(*a, valid=valid))
    logits = run(query, images, probs)
    assert logits.shape == (b, n + 1, h, w)
    assert torch.all(logits[1].softmax(0)[3] == 0)  # sample 1's third object is absent
    perm = [2, 0, 1]
    permuted = run(query, images, probs[:, :, perm], valid=valid[:, perm])
    # (float noise ~1e-6; the objects' channels differ by 2e-4 (corrflow) to 5e-2 (crw) here)
    torch.testing.assert_close(permuted, logits[:, [0, *(1 + i for i in perm)]], rtol=0, atol=1e-5)
    other = probs.clone()
    other[1, :, 2] = torch.rand(t, h, w, generator=g)  # the absent object's mask
    torch.testing.assert_close(run(query, images, other), logits, rtol=0, atol=0)
    def changes(*args):  # per sample: changed by more than float noise, or exactly the same
        diff = (run(*args) - logits).abs().amax(dim=(1, 2, 3))
        assert all(d == 0 or d > 1e-5 for d in diff), diff
        return [bool(d > 0) for d in diff]
    other = probs.clone()
    other[1, -1, 0] = 1 - other[1, -1, 0]  # sample 1, last memory frame, first object's mask
    assert changes(query, images, other) == [False, True]
    other = images.clone()
    other[0, 0] = torch.rand(3, h, w, generator=g)  # sample 0's first memory frame
    assert changes(query, other, probs) == [True, False]


def test_memory_encoder_starts_from_the_query_encoders_weights():
    net = narrow_stm("crw")
    q, m = net.query_encoder.state_dict(), net.memory_encoder.state_dict()
    assert set(m) - set(q) == {"extra_conv.weight"} and torch.all(m["extra_conv.weight"] == 0)
    assert all(torch.equal(q[k], m[k]) for k in q)
    assert q["encoder.conv1.weight"].data_ptr() != m["encoder.conv1.weight"].data_ptr()  # two encoders


def test_topk_read_option_changes_the_read():
    torch.manual_seed(0)
    dense, sparse = narrow_stm("crw"), narrow_stm("crw", topk=2)
    sparse.load_state_dict(dense.state_dict())
    args = (torch.rand(1, 3, 32, 32), torch.rand(1, 2, 3, 32, 32), torch.rand(1, 2, 1, 32, 32))
    with torch.no_grad():
        a, b = dense.eval()(*args), sparse.eval()(*args)
    assert a.shape == b.shape and not torch.allclose(a, b)


def expected_memory(t: int, every: int, cap: int) -> list[int]:
    """Frames read at step t (t >= 1): the first, the last ``cap - 2`` multiples of ``every`` before
    t, and the previous frame."""
    periodic = [i for i in range(1, t) if i % every == 0][-(cap - 2) :] if cap > 2 else []
    return [0, *periodic] + ([t - 1] if t - 1 not in periodic and t - 1 != 0 else [])


def test_inference_memory_stays_bounded_on_a_long_video():
    net = narrow_stm("crw")
    frames = torch.from_numpy(moving_blob_frames(60, (16, 24), seed=3)).permute(0, 3, 1, 2).float() / 255
    mask = np.zeros((16, 24), np.uint8)
    mask[4:8, 0:4], mask[10:14, 10:20] = 2, 7  # ids need not be 1..N
    state = STMInference(net, every=5, max_frames=4)
    first = state.step(frames[0], mask)
    assert state.object_ids == [2, 7] and first.shape == (3, 16, 24)
    assert torch.equal(first.argmax(0), torch.from_numpy(np.select([mask == 2, mask == 7], [1, 2], 0)))
    for t in range(1, 60):
        assert state.memory_frames == expected_memory(t, 5, 4), t
        probs = state.step(frames[t])
        assert probs.shape == (3, 16, 24)
        torch.testing.assert_close(probs.sum(0), torch.ones(16, 24))
        held = state._memory()
        assert len(held) <= 4 and len(state._periodic) <= 2
    assert state.memory_frames == [0, 50, 55, 59]
    with pytest.raises(RuntimeError, match="needs its mask"):
        STMInference(net).step(frames[0])
    with pytest.raises(ValueError, match="max_frames"):
        STMInference(net, max_frames=1)


def test_inference_with_only_first_and_previous_frames():
    net = narrow_stm("crw")
    state = STMInference(net, every=1, max_frames=2)
    frame = torch.rand(3, 16, 16)
    state.step(frame, np.ones((16, 16), np.uint8))
    for t in range(1, 6):
        assert state.memory_frames == ([0, t - 1] if t > 1 else [0])
        state.step(frame)


def fake_lightning_ckpt(path, net, *, kind="stm"):
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "corrflow": segmenter_payload(net, kind=kind, prefix="net.")}, path)
    return path


def test_segmenter_checkpoint_round_trip_and_wrong_kinds(tmp_path):
    net = narrow_stm("crw", topk=4).eval()
    with torch.no_grad():
        for p in net.memory_encoder.extra_conv.parameters():
            p.normal_()  # as after training
    path = fake_lightning_ckpt(tmp_path / "stm.ckpt", net)
    loaded = load_segmenter(path)
    assert loaded.topk == 4 and not loaded.training
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # a pretraining checkpoint where an STM one is expected, and the reverse
    enc = corrflow_encoder()
    pre = tmp_path / "pre.ckpt"
    torch.save({"state_dict": {f"net.encoder.{k}": v for k, v in enc.state_dict().items()}, "corrflow": encoder_payload(enc, prefix="net.encoder.")}, pre)
    with pytest.raises(ValueError, match="pretraining checkpoint .*not a STM segmenter checkpoint"):
        load_segmenter(pre)
    with pytest.raises(ValueError, match="not a corrflow training checkpoint"):
        load_encoder(path)
    with pytest.raises(ValueError, match="is a OSVOS checkpoint, not a STM one"):
        load_segmenter(fake_lightning_ckpt(tmp_path / "osvos.ckpt", net, kind="osvos"))
