"""TSM's temporal shift (Lin et al., ICCV 2019): before a residual block's first convolution, an
eighth of the channels is taken from the next frame and another eighth from the previous frame
(zeros beyond the clip), so 2D convolutions mix neighbouring frames at no cost in parameters.

Installed as forward pre-hooks on the blocks' ``conv1`` (the residual branch, TSM's "residual
shift"): the state dict is unchanged, so pretrained weights load as they are.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from torchvision.models.resnet import BasicBlock, Bottleneck

__all__ = ["add_temporal_shift", "temporal_shift"]


def temporal_shift(x: Tensor, n_frames: int, *, fold_div: int = 8) -> Tensor:
    """(B*T, C, H, W) -> (B*T, C, H, W): channels [0, C/fold_div) from frame t+1, [C/fold_div,
    2C/fold_div) from frame t-1 (zeros at the clip's ends), the rest unchanged."""
    bt, c, h, w = x.shape
    if bt % n_frames:
        raise ValueError(f"the batch ({bt} frames) is not whole clips of {n_frames} frames")
    v = x.view(bt // n_frames, n_frames, c, h, w)
    fold = c // fold_div
    out = v.new_zeros(v.shape)
    out[:, :-1, :fold] = v[:, 1:, :fold]  # from the future
    out[:, 1:, fold : 2 * fold] = v[:, :-1, fold : 2 * fold]  # from the past
    out[:, :, 2 * fold :] = v[:, :, 2 * fold :]
    return out.view(bt, c, h, w)


def add_temporal_shift(module: nn.Module, n_frames: int, *, fold_div: int = 8) -> list[RemovableHandle]:
    """Shift the input of ``conv1`` of every ResNet block inside ``module``; returns the hooks
    (``.remove()`` undoes it).

    Raises:
        ValueError: ``module`` has no ResNet blocks (e.g. EfficientNet-Lite0).
    """
    blocks = [m for m in module.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    if not blocks:
        raise ValueError(f"no ResNet blocks in {type(module).__name__} to add the temporal shift to (use a ResNet arch, or temporal_shift=false)")
    hook = lambda _m, args: (temporal_shift(args[0], n_frames, fold_div=fold_div),)  # noqa: E731
    return [b.conv1.register_forward_pre_hook(hook) for b in blocks]
