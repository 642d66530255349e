"""CorrFlow (Lai & Xie, BMVC 2019): colourise a frame from reference frames by restricted attention.

The encoder maps bottlenecked RGB to features at stride s. A target frame's colour distribution at
feature resolution is the attention-weighted sum of its reference's colour distributions (one-hot
quantised colours for ground truth, soft predictions when recursing). Predictions are upsampled to
input resolution and scored by NLL against the quantised colours.

Training recursion over a clip of T frames (T = 3 in the paper):
- reconstruction: frame i -> i+1 for i = 0..T-2; the reference for step i is frame i's ground
  truth with probability ``p_gt`` (always for i = 0), else the model's own prediction for frame i
  (scheduled sampling);
- cycles: for i = 1..T-1, go 0 -> 1 -> ... -> i chaining soft predictions from frame 0's ground
  truth, then back i -> ... -> 0, scored against frame 0's colours;
- loss = sum(reconstruction) + cycle_weight * sum(cycles).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from corrflow.losses.colour_nll import colour_nll
from corrflow.models.encoder import ResNetEncoder
from corrflow.models.local_attention import RestrictedLocalAttention

LABEL_DOWNSAMPLING = ("code", "nearest", "area")


def resize_index_map(index: Tensor, size: tuple[int, int], n_labels: int, *, mode: str = "bilinear") -> Tensor:
    """(B, H, W) integer label indices -> (B, n_labels, h, w) one-hot at ``size``.

    ``mode='bilinear'`` is what the released CorrFlow code does to colour bins (training) and to
    object labels (testing): the index map itself is resized bilinearly (``align_corners=False``)
    and truncated to integers, so an index can land between two neighbours'. 'nearest' takes the
    nearest index.
    """
    kw = {"align_corners": False} if mode == "bilinear" else {}
    idx = F.interpolate(index[:, None].float(), size=tuple(size), mode=mode, **kw).long().clamp_(0, n_labels - 1)
    return F.one_hot(idx[:, 0], n_labels).permute(0, 3, 1, 2).float()


class CorrFlow(nn.Module):
    """
    Args:
        encoder: the feature extractor (input RGB in [0, 1]).
        attention: the restricted attention (radius 6 in the paper).
        n_bins: number of colour bins K.
        label_downsampling: how quantised ground-truth colours reach feature resolution:
            'code' (as the released code: bilinear interpolation of the bin-index map, truncated
            to an integer, then one-hot), 'nearest' (one-hot of the nearest index) or 'area'
            (average of the one-hot over each cell: a soft label).
        chain_through_input_res: as the code, a soft prediction used as a reference is first
            upsampled to input resolution and then bilinearly resized back to feature resolution;
            False chains the feature-resolution prediction directly.
        encode_per_frame: as the code, each frame index of the clip goes through the encoder as
            its own batch, so BatchNorm's batch statistics cover one frame of each clip (B images);
            False encodes all B x T frames in one batch (statistics over the whole clip). The
            released code encodes again for every (reference, target) pair: the same batch
            statistics, only more updates of BatchNorm's running averages.
    """

    def __init__(
        self,
        *,
        encoder: ResNetEncoder,
        attention: RestrictedLocalAttention,
        n_bins: int = 16,
        label_downsampling: str = "code",
        chain_through_input_res: bool = True,
        encode_per_frame: bool = True,
    ) -> None:
        super().__init__()
        if label_downsampling not in LABEL_DOWNSAMPLING:
            raise ValueError(f"label_downsampling must be one of {LABEL_DOWNSAMPLING}, got {label_downsampling!r}")
        self.encoder, self.attention, self.n_bins = encoder, attention, n_bins
        self.label_downsampling, self.chain_through_input_res = label_downsampling, chain_through_input_res
        self.encode_per_frame = encode_per_frame

    def features(self, frames: Tensor) -> Tensor:
        """(B, T, 3, H, W) -> (B, T, C, h, w): one encoder batch per frame index, or one for all."""
        b, t = frames.shape[:2]
        if self.encode_per_frame:
            return torch.stack([self.encoder(frames[:, i]) for i in range(t)], dim=1)
        f = self.encoder(frames.flatten(0, 1))
        return f.view(b, t, *f.shape[1:])

    def downsample_labels(self, labels: Tensor, size: tuple[int, int]) -> Tensor:
        """(B, H, W) int64 bin indices -> (B, K, h, w) reference distributions."""
        if self.label_downsampling == "area":
            onehot = F.one_hot(labels, self.n_bins).permute(0, 3, 1, 2).float()
            return F.adaptive_avg_pool2d(onehot, size)
        mode = "bilinear" if self.label_downsampling == "code" else "nearest"
        return resize_index_map(labels, size, self.n_bins, mode=mode)

    def chain(self, pred: Tensor, input_size: tuple[int, int]) -> Tensor:
        """A (B, K, h, w) prediction as the next step's reference distribution."""
        if not self.chain_through_input_res:
            return pred
        up = F.interpolate(pred, size=input_size, mode="bilinear", align_corners=False)
        return F.interpolate(up, size=pred.shape[-2:], mode="bilinear", align_corners=False)

    def colourise(self, target_feats: Tensor, ref_feats: Tensor, ref_colours: Tensor) -> Tensor:
        """target (B, C, h, w), reference (B, C, h, w), colours (B, K, h, w) -> (B, K, h, w).

        The colours keep at least their own precision (never cast down to bf16 features' dtype
        under autocast): the attention computes in float32 whatever its inputs' dtype."""
        colours = ref_colours.to(torch.promote_types(ref_feats.dtype, ref_colours.dtype))
        return self.attention(target_feats, ref_feats[:, None], colours[:, None])

    def upsample(self, pred: Tensor, size: tuple[int, int]) -> Tensor:
        return F.interpolate(pred.float(), size=size, mode="bilinear", align_corners=False)

    def forward(
        self, frames: Tensor, labels: Tensor, *, use_gt: list[bool], cycle_weight: float = 0.1
    ) -> dict[str, Tensor]:
        """One training step's losses.

        Args:
            frames: (B, T, 3, H, W) bottlenecked RGB (the encoder's input).
            labels: (B, T, H, W) int64 quantised colours of the clean frames.
            use_gt: for steps 1..T-2, whether the reference is ground truth (len T-2).
            cycle_weight: weight of the cycle losses.
        Returns:
            ``loss``, ``loss_rec``, ``loss_cycle``, ``loss_rec_<i>`` per step and ``pred_<i>``
            ((B, K, h, w) predictions for frames 1..T-1 of the reconstruction path).
        """
        b, t, _, h_in, w_in = frames.shape
        if t < 2:
            raise ValueError(f"a clip needs at least 2 frames, got {t}")
        if len(use_gt) != max(t - 2, 0):
            raise ValueError(f"use_gt needs {t - 2} entries for a {t}-frame clip, got {len(use_gt)}")
        size_in = (h_in, w_in)
        feats = self.features(frames)
        size = feats.shape[-2:]
        gt = [self.downsample_labels(labels[:, i], size) for i in range(t)]
        out: dict[str, Tensor] = {}

        loss_rec = frames.new_zeros((), dtype=torch.float32)
        pred = None
        for i in range(t - 1):
            ref = gt[i] if i == 0 or use_gt[i - 1] else self.chain(pred, size_in)
            pred = self.colourise(feats[:, i + 1], feats[:, i], ref)
            loss_i = colour_nll(self.upsample(pred, size_in), labels[:, i + 1])
            out[f"loss_rec_{i + 1}"] = loss_i.detach()
            out[f"pred_{i + 1}"] = pred.detach()
            loss_rec = loss_rec + loss_i

        loss_cycle = frames.new_zeros((), dtype=torch.float32)
        for i in range(1, t):
            path = list(range(0, i + 1)) + list(range(i - 1, -1, -1))  # 0 -> ... -> i -> ... -> 0
            for step, (src, dst) in enumerate(zip(path[:-1], path[1:])):
                ref = gt[0] if step == 0 else self.chain(pred, size_in)
                pred = self.colourise(feats[:, dst], feats[:, src], ref)
            loss_c = colour_nll(self.upsample(pred, size_in), labels[:, 0])
            out[f"loss_cycle_{i}"] = loss_c.detach()
            loss_cycle = loss_cycle + loss_c

        out["loss_rec"] = loss_rec
        out["loss_cycle"] = loss_cycle
        out["loss"] = loss_rec + cycle_weight * loss_cycle
        return out
