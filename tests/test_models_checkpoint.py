"""load_encoder: a corrflow checkpoint's encoder, rebuilt alone, in eval mode unless asked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from corrflow.models.checkpoint import encoder_payload, load_encoder
from corrflow.models.encoder import corrflow_encoder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    """A checkpoint whose encoder has non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    enc = corrflow_encoder()
    with torch.no_grad():
        enc(torch.rand(2, 3, 32, 32) * 2)  # training-mode forward: the running stats move
    path = tmp_path / "final.ckpt"
    torch.save({"state_dict": {"net.encoder." + k: v for k, v in enc.state_dict().items()},
                "corrflow": encoder_payload(enc, prefix="net.encoder.")}, path)  # fmt: skip
    return path


def _bn_stats(enc: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in enc.state_dict().items() if "running" in k or "num_batches" in k}


def test_load_encoder_returns_eval_mode_and_a_forward_leaves_bn_alone(ckpt: Path) -> None:
    enc = load_encoder(ckpt)
    assert not enc.training
    assert not any(m.training for m in enc.modules())
    before = _bn_stats(enc)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        a = enc(x)
        b = enc(x[:1])
    for k, v in _bn_stats(enc).items():
        assert torch.equal(v, before[k]), k
    # per-sample output independent of the batch: the stored statistics normalise, not the batch's
    torch.testing.assert_close(a[:1], b)


def test_load_encoder_train_flag_returns_training_mode(ckpt: Path) -> None:
    enc = load_encoder(ckpt, train=True)
    assert enc.training and all(m.training for m in enc.modules())
    before = _bn_stats(enc)
    with torch.no_grad():
        enc(torch.rand(2, 3, 32, 32))
    assert not torch.equal(_bn_stats(enc)["bn1.running_mean"], before["bn1.running_mean"])
