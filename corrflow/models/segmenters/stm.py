"""STM: space-time memory networks for semi-supervised video object segmentation (Oh et al.,
ICCV 2019), on a :class:`~corrflow.models.backbone.SegmentationBackbone`.

- A query encoder (the backbone, RGB) and a memory encoder (a copy of it taking RGB + the
  object's mask + the other objects' mask, the extra channels zero-initialised), each with 3x3 key
  (``key_dim``, 128) and value (``value_dim``, 512) heads on the backbone's coarsest map (stride 8
  or 16, whatever the backbone reaches), or, with ``kv_stage``, on a named side stage of the
  backbone average-pooled to that stride (see below).
- The memory read (:func:`~corrflow.models.segmenters.functional.memory_read`): softmax over all
  memory positions of k_M . k_Q / sqrt(d_k), optionally over the top-k only; the read values are
  concatenated with the query value.
- A decoder refining with the backbone maps the heads do not read (1/8 where the keys are at
  1/16, and 1/4) to a foreground logit at 1/4, bilinearly upsampled to full resolution; one pass
  per object, merged by soft aggregation into (N + 1)-way logits (background first).

Where the keys and values come from (``kv_stage``): the release (Oh et al.) reads them from
ResNet-50's res4 (1024-d, stride 16) and refines at res3 (stride 8) and res2 (stride 4). On the
CorrFlow encoder, which stays at stride 4 and ends in a 3x3 conv to 64-d, the coarsest map
(``kv_stage=None``) is that 64-d head average-pooled to stride 8, and the decoder refines once, at
stride 4. ``kv_stage='layer4'`` reads the 256-d layer4 instead, average-pooled to stride 8 (no new
parameters), and since the heads then no longer read the backbone's stride-8 map (the head
pooled), the decoder refines with it first: a stride-8 refinement stage (the release's res3
place), then the stride-4 one. Any side stage of the backbone (``backbone.side_stages``) whose
stride divides the backbone's can be named. The default, ``'auto'`` (:func:`default_kv_stage`), is
the release's arrangement on every backbone: layer4 on the CorrFlow encoder, and the coarsest map
on the CRW variant and Lite0, whose coarsest maps already are their deepest wide stage.

:class:`STMInference` holds one video's memory: the first frame, every ``every``-th frame (the
oldest dropped past ``max_frames``) and the previous frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from corrflow.models.backbone import SegmentationBackbone
from corrflow.models.segmenters.functional import memory_read, soft_aggregate
from corrflow.utils.grid import pad_to_stride

__all__ = ["default_kv_stage", "QueryFeatures", "STMDecoder", "STMInference", "STMSegmenter"]

VOID_ID = 255


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class ResidualBlock(nn.Module):
    """x + conv(relu(conv(relu(x)))), channels kept."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv3x3(channels, channels), conv3x3(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class STMDecoder(nn.Module):
    """Memory read + query value at the key stride -> a foreground logit at the finest skip's stride.

    Args:
        in_channels: channels of the decoder input (read values + query value).
        skip_channels: {stride: channels} of the backbone maps it refines with, each merged in
            turn, coarse to fine (the maps finer than the key stride; with ``kv_stage``, the map at
            the key stride first).
        dim: the decoder's width.
    """

    def __init__(self, *, in_channels: int, skip_channels: dict[int, int], dim: int) -> None:
        super().__init__()
        self.fuse = nn.Sequential(conv3x3(in_channels, dim), ResidualBlock(dim))
        self.skip_strides = sorted(skip_channels, reverse=True)  # coarse to fine
        self.skip_proj = nn.ModuleDict({str(s): nn.Sequential(conv3x3(skip_channels[s], dim), ResidualBlock(dim)) for s in self.skip_strides})
        self.merge = nn.ModuleDict({str(s): ResidualBlock(dim) for s in self.skip_strides})
        self.pred = conv3x3(dim, 1)

    def project_skips(self, feats: dict[int, Tensor]) -> dict[int, Tensor]:
        """The per-frame (object-independent) part: {stride: (B, C_s, ...)} -> {stride: (B, dim, ...)}."""
        return {s: self.skip_proj[str(s)](feats[s]) for s in self.skip_strides}

    def forward(self, x: Tensor, skips: dict[int, Tensor]) -> Tensor:
        """x (B', in_channels, h, w), projected skips {stride: (B', dim, H_s, W_s)} -> (B', 1, H_f, W_f)."""
        x = self.fuse(x)
        for s in self.skip_strides:
            skip = skips[s]
            x = self.merge[str(s)](skip + F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False))
        return self.pred(F.relu(x))


@dataclass
class QueryFeatures:
    """What segmenting one frame needs from its query encoding (object-independent).

    key (B, Ck, h, w); value (B, Cv, h, w); skips {stride: (B, dim, H/s, W/s)} (projected);
    size (H, W) of the frame; padded (H', W'), the multiple of the backbone stride it was padded to.
    """

    key: Tensor
    value: Tensor
    skips: dict[int, Tensor]
    size: tuple[int, int]
    padded: tuple[int, int]


def default_kv_stage(backbone: SegmentationBackbone) -> str | None:
    """Where STM's keys and values come from by default (``kv_stage='auto'``), the release's
    arrangement on any backbone: the deepest side stage finer than the backbone's stride and wider
    than its coarsest map (the release's res4 is its deepest wide stage, refined at each finer
    stride). On the CorrFlow encoder, whose coarsest map is its 64-d head pooled to stride 8, that
    is the 256-d layer4; the CRW variant and Lite0 have none (their coarsest map is already their
    deepest wide stage), so None: the coarsest map."""
    coarsest = backbone.channels[backbone.stride]
    wider = [s for s in backbone.side_stages if backbone.stage_strides[s] < backbone.stride and backbone.stage_channels[s] > coarsest]
    return wider[-1] if wider else None


class STMSegmenter(nn.Module):
    """
    Args:
        backbone: the query encoder (no extra inputs); the memory encoder is a copy of it with two
            zero-initialised extra input channels (object mask, other objects' mask).
        key_dim, value_dim: widths of the key and value heads (128 and 512 in the paper).
        decoder_dim: the decoder's width (256 in the paper).
        topk: memory read over the k largest affinities of each query position (None: all).
        kv_stage: None (the backbone's coarsest map feeds the key and value heads, and the decoder
            refines with the finer maps), the name of a side stage of the backbone (the CorrFlow
            encoder's 'layer4') whose output, average-pooled to the backbone's stride, feeds
            them (the decoder then refines with every backbone map up to the backbone's stride,
            a refinement at the key stride too), or 'auto' (the default:
            :func:`default_kv_stage`, the release's arrangement). ``config`` records the resolved
            choice. See the module docstring.

    Frames of any size: they are padded (bottom, right, replicating the border) to a multiple of
    the backbone's stride and the logits cropped back.
    """

    def __init__(
        self,
        *,
        backbone: SegmentationBackbone,
        key_dim: int = 128,
        value_dim: int = 512,
        decoder_dim: int = 256,
        topk: int | None = None,
        kv_stage: str | None = "auto",
    ) -> None:
        super().__init__()
        if backbone.extra_in_channels:
            raise ValueError("STM builds its memory encoder's extra inputs itself: give a backbone with extra_in_channels=0")
        if topk is not None and topk < 1:
            raise ValueError(f"topk must be >= 1 or null, got {topk}")
        if kv_stage == "auto":
            kv_stage = default_kv_stage(backbone)
        self.config: dict[str, Any] = {"key_dim": key_dim, "value_dim": value_dim, "decoder_dim": decoder_dim, "topk": topk, "kv_stage": kv_stage}
        self.topk = topk
        self.stride = backbone.stride
        self.kv_stage = kv_stage
        if kv_stage is None:
            deep = backbone.channels[backbone.stride]
            skips = {s: backbone.channels[s] for s in backbone.strides if s < backbone.stride}
            self._kv_pool = 1
        else:
            if kv_stage not in backbone.side_stages:
                raise ValueError(f"kv_stage must be null or one of the backbone's side stages ({', '.join(backbone.side_stages)}), got {kv_stage!r}")
            stage_stride = backbone.stage_strides[kv_stage]
            if backbone.stride % stage_stride:
                raise ValueError(f"kv_stage {kv_stage!r} is at stride {stage_stride}, which does not divide the backbone's stride {backbone.stride}")
            deep = backbone.stage_channels[kv_stage]
            skips = {s: backbone.channels[s] for s in backbone.strides if s <= backbone.stride}
            self._kv_pool = backbone.stride // stage_stride
        self.query_encoder = backbone
        self.memory_encoder = backbone.with_extra_inputs(2)
        if kv_stage is not None:
            # the memory encoder's layers after kv_stage are not run (only the query's maps feed the
            # decoder): kept as copied, frozen, so that no trainable parameter goes without a gradient
            # (DDP's rule) and the two encoders keep one layout
            for module in self.memory_encoder.modules_after(kv_stage):
                module.requires_grad_(False)
        self.query_key, self.query_value = conv3x3(deep, key_dim), conv3x3(deep, value_dim)
        self.memory_key, self.memory_value = conv3x3(deep, key_dim), conv3x3(deep, value_dim)
        self.decoder = STMDecoder(in_channels=2 * value_dim, skip_channels=skips, dim=decoder_dim)
        self.output_stride = min(skips) if skips else backbone.stride

    @property
    def backbone(self) -> SegmentationBackbone:
        """The query encoder: the backbone STM was built on (its config describes it in checkpoints)."""
        return self.query_encoder

    # -- encoders ------------------------------------------------------------------------------
    def _encode(self, encoder: SegmentationBackbone, image: Tensor, extra: Tensor | None = None, *, maps: bool = True) -> tuple[dict[int, Tensor], Tensor]:
        """One encoder pass: (its maps {stride: (B, C_s, H/s, W/s)}, what the key and value heads
        read (B, C, H/stride, W/stride): the coarsest map, or ``kv_stage`` pooled to the stride).
        ``maps=False`` with ``kv_stage``: the pass stops at that stage and the maps are ``{}``."""
        if self.kv_stage is None:
            feats = encoder(image, extra)
            return feats, feats[self.stride]
        feats, named = encoder.forward_with_stages(image, extra, stages=(self.kv_stage,), maps=maps)
        deep = named[self.kv_stage]
        if self._kv_pool > 1:
            deep = F.avg_pool2d(deep, kernel_size=self._kv_pool, stride=self._kv_pool)
        return feats, deep

    def encode_memory(self, image: Tensor, prob: Tensor, *, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Memory key and value of one frame, per object.

        Args:
            image: (B, 3, H, W) RGB in [0, 1].
            prob: (B, N, H, W) each object's mask (ground truth or predicted probabilities).
            valid: (B, N) bool, objects that exist (the others' masks are taken as zero).

        Returns:
            key (B, N, Ck, h, w) and value (B, N, Cv, h, w), h = ceil(H / stride).
        """
        b, n = prob.shape[:2]
        if image.shape[0] != b or prob.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"prob must be (B, N, H, W) for image {tuple(image.shape)}, got {tuple(prob.shape)}")
        if valid is not None:
            prob = prob * valid[:, :, None, None].to(prob.dtype)
        others = (prob.sum(dim=1, keepdim=True) - prob).clamp(0, 1)
        extra = torch.stack([prob, others], dim=2).flatten(0, 1)  # (B*N, 2, H, W)
        image = image.repeat_interleave(n, dim=0)
        _, deep = self._encode(self.memory_encoder, pad_to_stride(image, self.stride), pad_to_stride(extra, self.stride), maps=False)
        key, value = self.memory_key(deep), self.memory_value(deep)
        return key.unflatten(0, (b, n)), value.unflatten(0, (b, n))

    def encode_query(self, image: Tensor) -> QueryFeatures:
        """(B, 3, H, W) RGB in [0, 1] -> its :class:`QueryFeatures`."""
        size = (image.shape[-2], image.shape[-1])
        x = pad_to_stride(image, self.stride)
        feats, deep = self._encode(self.query_encoder, x)
        return QueryFeatures(
            key=self.query_key(deep),
            value=self.query_value(deep),
            skips=self.decoder.project_skips(feats),
            size=size,
            padded=(x.shape[-2], x.shape[-1]),
        )

    # -- segmentation --------------------------------------------------------------------------
    def segment(self, query: QueryFeatures, memory_key: Tensor, memory_value: Tensor, *, valid: Tensor | None = None) -> Tensor:
        """Segment the query frame from the memory.

        Args:
            query: the frame's :class:`QueryFeatures` (batch B).
            memory_key: (B, N, T, Ck, h, w), T memory frames per object.
            memory_value: (B, N, T, Cv, h, w).
            valid: (B, N) bool, objects that exist (None: all).

        Returns:
            (B, N + 1, H, W) logits at the frame's size, background first (soft aggregation).
        """
        b, n = memory_key.shape[:2]
        qk = query.key.repeat_interleave(n, dim=0)
        read = memory_read(qk, memory_key.flatten(0, 1), memory_value.flatten(0, 1), topk=self.topk)
        x = torch.cat([read, query.value.repeat_interleave(n, dim=0)], dim=1)
        skips = {s: f.repeat_interleave(n, dim=0) for s, f in query.skips.items()}
        logit = F.interpolate(self.decoder(x, skips), size=query.padded, mode="bilinear", align_corners=False)
        h, w = query.size
        prob = torch.sigmoid(logit[..., :h, :w].float()).view(b, n, h, w)
        return soft_aggregate(prob, valid=valid)

    def forward(self, image: Tensor, memory_images: Tensor, memory_probs: Tensor, *, valid: Tensor | None = None) -> Tensor:
        """Segment ``image`` (B, 3, H, W) from T memory frames ``memory_images`` (B, T, 3, H, W)
        with their object masks ``memory_probs`` (B, T, N, H, W). Returns (B, N + 1, H, W) logits."""
        keys, values = zip(*(self.encode_memory(memory_images[:, t], memory_probs[:, t], valid=valid) for t in range(memory_images.shape[1])))
        return self.segment(self.encode_query(image), torch.stack(keys, dim=2), torch.stack(values, dim=2), valid=valid)


class STMInference:
    """One video's STM segmentation, frame by frame, in bounded memory.

    The memory read at each frame covers: the first frame (with its given mask), the frames whose
    index is a multiple of ``every`` (the most recent ``max_frames - 2`` of them), and the
    previous frame (with their predicted probabilities): at most ``max_frames`` frames, however
    long the video.

    Args:
        net: the segmenter (used in eval mode, without gradients).
        every: memorise every this-many-th frame (5 in the paper).
        max_frames: the cap on memory frames, first and previous included (>= 2).
        device: where the frames and the memory live.
    """

    def __init__(self, net: STMSegmenter, *, every: int = 5, max_frames: int = 20, device: torch.device | str = "cpu") -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if max_frames < 2:
            raise ValueError(f"max_frames must be >= 2 (the first and the previous frame), got {max_frames}")
        self.net, self.every, self.max_frames, self.device = net, every, max_frames, torch.device(device)
        self.reset()

    def reset(self) -> None:
        """Forget the video: the next :meth:`step` must bring the first frame's mask."""
        self.object_ids: list[int] = []
        self._first: tuple[int, Tensor, Tensor] | None = None  # (t, key (1,N,Ck,h,w), value)
        self._periodic: list[tuple[int, Tensor, Tensor]] = []
        self._previous: tuple[int, Tensor, Tensor] | None = None
        self._t = 0

    @property
    def memory_frames(self) -> list[int]:
        """Indices of the frames the next step reads."""
        return [t for t, _, _ in self._memory()]

    def _memory(self) -> list[tuple[int, Tensor, Tensor]]:
        if self._first is None:
            return []
        mem = [self._first, *self._periodic]
        if self._previous is not None and self._previous[0] not in {t for t, _, _ in mem}:
            mem.append(self._previous)
        return mem

    @torch.no_grad()
    def start(self, frame: Tensor, objects: Tensor, *, object_ids: list[int] | None = None) -> Tensor:
        """Start a video (forgetting the previous one) from its first frame and its objects' masks.

        Args:
            frame: (3, H, W) RGB in [0, 1].
            objects: (N, H, W) the N >= 1 objects' masks in [0, 1] (one-hot, or soft).
            object_ids: the objects' ids, in channel order (default 1..N).

        Returns:
            (N + 1, H, W): background (1 - the sum of the masks) and ``objects``.
        """
        self.net.eval()
        image = frame.to(self.device, torch.float32)[None]
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"frame must be (3, H, W), got {tuple(frame.shape)}")
        if objects.ndim != 3 or objects.shape[0] < 1 or objects.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"objects must be (N >= 1, H, W) for a frame of {tuple(image.shape[-2:])}, got {tuple(objects.shape)}")
        ids = list(range(1, objects.shape[0] + 1)) if object_ids is None else [int(i) for i in object_ids]
        if len(ids) != objects.shape[0]:
            raise ValueError(f"{len(ids)} object ids for {objects.shape[0]} masks")
        self.reset()
        self.object_ids = ids
        fg = objects.to(self.device, torch.float32)[None]  # (1, N, H, W)
        probs = torch.cat([1 - fg.sum(dim=1, keepdim=True), fg], dim=1)[0]
        key, value = self.net.encode_memory(image, fg)
        self._first = (0, key, value)
        self._t = 1
        return probs

    @torch.no_grad()
    def step(self, frame: Tensor, mask: Tensor | np.ndarray | None = None) -> Tensor:
        """Feed the next frame.

        Args:
            frame: (3, H, W) RGB in [0, 1].
            mask: the first frame's (H, W) integer id map (0 background, 255 void, the other
                values the objects), which starts the video (as :meth:`start` with its one-hot
                masks); None for the frames to segment.

        Returns:
            (N + 1, H, W) probabilities (background first; channel i is ``object_ids[i - 1]``):
            the one-hot mask for the first frame.
        """
        self.net.eval()
        image = frame.to(self.device, torch.float32)[None]
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"frame must be (3, H, W), got {tuple(frame.shape)}")
        if mask is not None:
            ids_map = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask).to(self.device).long()
            if ids_map.shape != image.shape[-2:]:
                raise ValueError(f"mask is {tuple(ids_map.shape)} but the frame is {tuple(image.shape[-2:])}")
            ids = [int(i) for i in torch.unique(ids_map).tolist() if i not in (0, VOID_ID)]
            if not ids:
                raise ValueError("the first frame's mask holds no object (only ids 0 and 255)")
            return self.start(frame, torch.stack([(ids_map == i).float() for i in ids]), object_ids=ids)
        if self._first is None:
            raise RuntimeError("the first step of a video needs its mask: step(frame, mask)")
        mem = self._memory()
        keys = torch.stack([k for _, k, _ in mem], dim=2)  # (1, N, T, Ck, h, w)
        values = torch.stack([v for _, _, v in mem], dim=2)
        logits = self.net.segment(self.net.encode_query(image), keys, values)
        probs = logits.softmax(dim=1)
        t = self._t
        key, value = self.net.encode_memory(image, probs[:, 1:])
        self._previous = (t, key, value)
        if t % self.every == 0 and self.max_frames > 2:
            self._periodic.append((t, key, value))
            del self._periodic[: max(len(self._periodic) - (self.max_frames - 2), 0)]
        self._t += 1
        return probs[0]
