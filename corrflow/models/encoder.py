"""One ResNet encoder, built from torchvision's ResNet parts, configurable into both variants.

- CorrFlow (Lai & Xie 2019): conv1 7x7/2 without max-pool, layer2 stride 2, layer3 and layer4
  stride 1 with 256 channels, then a 3x3 conv 256 -> 64: 64-d features at stride 4.
- CRW evaluation encoder: torchvision ResNet-18 with max-pool, layer3 stride 1, layer4 removed:
  256-d features at stride 8.

Layer names follow torchvision's (conv1, bn1, layer1...), so torchvision state dicts load into
the shared part.

Initialisation (``init``), one of two rules applied to every layer:

- ``'pytorch'``: PyTorch's own default for each module, what CorrFlow's released code keeps
  (zlai0/CorrFlow ``models/submodule.py`` builds its own ResNet18 and ``models/corrflow.py`` its
  256 -> 64 ``post_convolution``, and neither touches the initialisation): every convolution
  ``kaiming_uniform_(a=sqrt(5))``, i.e. weight std 1/sqrt(3 fan_in), its bias (the head's)
  uniform in +-1/sqrt(fan_in); every BatchNorm weight 1, bias 0. The CorrFlow encoder's default.
- ``'torchvision'``: torchvision's ResNet's: Kaiming normal (fan-out, ReLU gain) for each
  convolution, BatchNorm weight 1 and bias 0, optionally the last BN of each residual branch at
  zero (``zero_init_residual``, off as in torchvision). conv1 ... layer3 are the very modules of
  a torchvision ``ResNet`` (their strides set afterwards), so under the same seed they hold
  exactly the weights ``torchvision.models.resnet18(weights=None)`` draws. Layers torchvision
  lacks (CorrFlow's 256-channel layer4, the 3x3 head) are drawn afterwards by the same rule (the
  head's bias keeps PyTorch's default). The CRW encoder's default (CRW's is torchvision's
  ResNet-18), and ``model.net.encoder.init=torchvision`` for the CorrFlow one.

With the torchvision rule the CorrFlow encoder's residual convs start 2.4x larger than with
PyTorch's and its head 4.9x, so its raw temperature-1 dot products make the initial 13x13 softmax
nearly a hard arg-max.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, ResNet

_BLOCKS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}
INITS = ("pytorch", "torchvision")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class ResNetEncoder(nn.Module):
    """ResNet feature extractor.

    Args:
        depth: 18 or 34 (BasicBlock ResNets).
        maxpool: keep the 3x3/2 max-pool after conv1.
        layer_strides: strides of layer2, layer3, layer4.
        num_layers: 3 (drop layer4) or 4.
        layer4_channels: width of layer4 (torchvision: 512; CorrFlow: 256).
        out_channels: if set, a 3x3 conv maps the last layer to this many channels.
        input_norm: 'none' (RGB in [0, 1] as CorrFlow) or 'imagenet' (mean/std normalised).
        padding_mode: of every padded convolution: 'zeros' (torchvision, CorrFlow) or 'reflect'
            (CRW's own encoder, ``net.modify(padding='reflect')``); any ``nn.Conv2d`` mode.
        zero_init_residual: start the last BatchNorm of every residual branch at weight 0, so that
            each block starts as the identity (torchvision's option of the same name, off there too).
        init: 'pytorch' (PyTorch's default for every module, as CorrFlow's released code; the
            default) or 'torchvision' (torchvision ResNet's Kaiming normal fan-out); see above.

    Input (B, 3, H, W) RGB in [0, 1]; output (B, out_dim, H / stride, W / stride).
    """

    def __init__(
        self,
        *,
        depth: int = 18,
        maxpool: bool = False,
        layer_strides: Sequence[int] = (2, 1, 1),
        num_layers: int = 4,
        layer4_channels: int = 256,
        out_channels: int | None = 64,
        input_norm: str = "none",
        padding_mode: str = "zeros",
        zero_init_residual: bool = False,
        init: str = "pytorch",
    ) -> None:
        super().__init__()
        if depth not in _BLOCKS:
            raise ValueError(f"depth must be one of {sorted(_BLOCKS)}, got {depth}")
        if num_layers not in (3, 4):
            raise ValueError(f"num_layers must be 3 or 4, got {num_layers}")
        if input_norm not in ("none", "imagenet"):
            raise ValueError(f"input_norm must be 'none' or 'imagenet', got {input_norm!r}")
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"padding_mode must be zeros, reflect, replicate or circular, got {padding_mode!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")
        blocks = _BLOCKS[depth]
        # The constructor arguments, stored in checkpoints so that an encoder can be rebuilt alone.
        self.config = {
            "depth": depth,
            "maxpool": maxpool,
            "layer_strides": [int(s) for s in layer_strides],
            "num_layers": num_layers,
            "layer4_channels": layer4_channels,
            "out_channels": out_channels,
            "input_norm": input_norm,
            "padding_mode": padding_mode,
            "zero_init_residual": bool(zero_init_residual),
            "init": init,
        }
        # torchvision's ResNet, initialised by torchvision: its stem and layer1-3 are used as they are.
        base = ResNet(BasicBlock, blocks, zero_init_residual=zero_init_residual)
        self.conv1, self.bn1, self.relu = base.conv1, base.bn1, base.relu
        self.maxpool = base.maxpool if maxpool else nn.Identity()
        s2, s3, s4 = layer_strides
        self.layer1 = base.layer1
        self.layer2 = _set_stride(base.layer2, s2)
        self.layer3 = _set_stride(base.layer3, s3)
        last = 256
        new: list[nn.Module] = []  # layers torchvision's ResNet does not have
        if num_layers == 4:
            if layer4_channels == 512:
                self.layer4 = _set_stride(base.layer4, s4)
            else:
                base.inplanes = 256
                self.layer4 = base._make_layer(BasicBlock, layer4_channels, blocks[3], stride=s4)
                new.append(self.layer4)
            last = layer4_channels
        self.head = nn.Conv2d(last, out_channels, 3, padding=1) if out_channels else nn.Identity()
        new.append(self.head)
        if init == "torchvision":
            for module in new:
                _init_like_torchvision(module, zero_init_residual=zero_init_residual)
        else:  # PyTorch's default, every module drawn afresh (torchvision's ResNet had re-drawn its own)
            _init_like_pytorch(self, zero_init_residual=zero_init_residual)
        self.out_dim = out_channels or last
        self.stride = 2 * (2 if maxpool else 1) * s2 * s3 * (s4 if num_layers == 4 else 1)
        self.input_norm = input_norm
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and sum(m.padding) > 0:
                m.padding_mode = padding_mode
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, out_dim, H / stride, W / stride)."""
        if self.input_norm == "imagenet":
            x = (x - self.mean) / self.std
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        if hasattr(self, "layer4"):
            x = self.layer4(x)
        return self.head(x)


def _set_stride(layer: nn.Sequential, stride: int) -> nn.Sequential:
    """Set the stride of a torchvision ResNet layer (its first block's 3x3 conv and shortcut) in
    place. The first block of layer2-4 changes width, so it has a 1x1 shortcut at any stride, as
    ``ResNet._make_layer`` would build it."""
    first = layer[0]
    first.stride = stride
    first.conv1.stride = (stride, stride)
    if first.downsample is not None:
        first.downsample[0].stride = (stride, stride)
    return layer


def _init_like_pytorch(module: nn.Module, *, zero_init_residual: bool) -> None:
    """PyTorch's default initialisation (each module's ``reset_parameters``), in place, for every
    convolution and normalisation layer of ``module``, in module order."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.GroupNorm)):
            m.reset_parameters()
    if zero_init_residual:
        for m in module.modules():
            if isinstance(m, BasicBlock):
                nn.init.constant_(m.bn2.weight, 0)


def _init_like_torchvision(module: nn.Module, *, zero_init_residual: bool) -> None:
    """torchvision ResNet's initialisation, applied to every layer of ``module`` in place."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    if zero_init_residual:
        for m in module.modules():
            if isinstance(m, BasicBlock):
                nn.init.constant_(m.bn2.weight, 0)


def corrflow_encoder(*, padding_mode: str = "zeros", init: str | None = None) -> ResNetEncoder:
    """The CorrFlow encoder: 64-d at stride 4; ``init=None`` is its own, the released code's ('pytorch')."""
    return ResNetEncoder(padding_mode=padding_mode, init=init or "pytorch")


def crw_encoder(*, padding_mode: str = "zeros", init: str | None = None) -> ResNetEncoder:
    """The CRW evaluation encoder: 256-d at stride 8, ImageNet input normalisation (CRW's own
    trained encoder used ``padding_mode='reflect'``); ``init=None`` is its own, torchvision's."""
    return ResNetEncoder(
        maxpool=True, layer_strides=(2, 1, 1), num_layers=3, out_channels=None, input_norm="imagenet", padding_mode=padding_mode,
        init=init or "torchvision",
    )
