"""Encoder features: a checkpoint's encoder, or the same architecture untrained and seeded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from corrflow.features.encoder import checkpoint_features, random_features
from corrflow.models.checkpoint import encoder_payload
from corrflow.models.encoder import corrflow_encoder

pytestmark = pytest.mark.usefixtures("one_thread")



def test_random_features_are_seeded_and_leave_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = random_features(seed=0), random_features(seed=0), random_features(seed=1)
    assert torch.equal(torch.rand(1), before)
    wa, wb, wc = (m.conv1.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert not a.training and a.stride == 4 and a.out_dim == 64
    crw = random_features(arch="crw")
    assert crw.stride == 8 and crw.out_dim == 256
    with pytest.raises(ValueError, match="arch"):
        random_features(arch="vit")


def test_checkpoint_features_load_the_trained_weights(tmp_path: Path) -> None:
    enc = corrflow_encoder()
    with torch.no_grad():
        enc.head.weight.fill_(0.25)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"net.encoder." + k: v for k, v in enc.state_dict().items()},
                "corrflow": encoder_payload(enc, prefix="net.encoder.")}, path)  # fmt: skip
    loaded = checkpoint_features(path)
    assert not loaded.training and torch.all(loaded.head.weight == 0.25)


def test_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a checkpoint"):
        checkpoint_features(None)
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        checkpoint_features(tmp_path / "nope.ckpt")
    other = tmp_path / "other.ckpt"
    torch.save({"model": {}}, other)
    with pytest.raises(ValueError, match=r"other\.ckpt: not a corrflow training checkpoint"):
        checkpoint_features(other)


def test_random_crw_features_are_torchvision_resnet18_untrained() -> None:
    """docs/propagation.md's claim: ``features=random arch=crw seed=s`` holds exactly the weights
    ``torchvision.models.resnet18(weights=None)`` draws under ``torch.manual_seed(s)``."""
    from torchvision.models import resnet18

    for seed in (0, 5):
        torch.manual_seed(seed)
        tv = resnet18(weights=None).state_dict()
        ours = random_features(arch="crw", seed=seed).state_dict()
        for k, v in ours.items():
            assert torch.equal(v, tv[k]), k
