"""``LabelPropagator``: the per-video state of label propagation (the context queue).

It holds the first frame (features and labels) and a queue of the last ``n_recent`` frames, so
its memory is bounded by the context size, whatever the video length: frames are fed one at a
time with :meth:`LabelPropagator.step`.

Objects that enter later (YouTube-VOS; ``task.late_objects`` on DAVIS) join with
:meth:`LabelPropagator.join`: the frame where their first mask is given becomes context with
their channels added, and (with ``global_first``) a reference seen whole for the rest of the video,
next to the first frame. Objects already tracked keep their context; they are not restarted.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.profiler import record_function

from corrflow.attention import restricted_attention
from corrflow.propagation.functional import (
    frame_regions,
    mixed_context_attention,
    mixed_context_attention_regions,
    onehot_argmax,
    region_keys,
    window_reach,
)
from corrflow.utils.grid import pad_to_stride

__all__ = ["LabelPropagator"]

FEEDBACK = ("soft", "argmax")


class LabelPropagator:
    """Propagates label maps through one video, frame by frame.

    The CRW protocol is ``global_first=True, n_recent=20, radius=12, window='disc',
    temperature=0.05, topk=10, feedback='soft', normalize=True``; CorrFlow's is
    ``global_first=False, n_recent=1, radius=6, window='square', temperature=1, topk=None,
    feedback='argmax', normalize=False``.

    Args:
        features: maps (1, 3, H', W') RGB in [0, 1] (H', W' multiples of ``features.stride``) to
            (1, C, H' / s, W' / s). It needs a ``stride`` attribute.
        n_recent: how many previous frames the context holds (the start is padded with the first).
        global_first: the first frame is also attended whole (not only within the radius).
        radius: window half-size for recent frames, in feature cells.
        window: the recent frames' window: 'disc' (offsets closer than ``radius``, Euclidean, as
            CRW's test code masks; needs ``global_first``) or 'square' ((2M+1) x (2M+1), CorrFlow's).
        temperature: logits are divided by it.
        topk: keep the k largest affinities over the whole context (None: all).
        feedback: 'soft' (the soft prediction becomes context) or 'argmax' (its one-hot).
        normalize: L2-normalise features over channels.
        backend: restricted-attention backend for the windowed-only case.
        region_cache_mb: the CRW context with a top-k (a global first frame, recent frames and
            ``topk``) lays each recent frame's key and label regions out once, when it enters the
            context, into one buffer of the R recent frames' slots, and reads it for the 20 frames
            the frame stays there
            (:func:`~corrflow.propagation.functional.mixed_context_attention_regions`: the same
            candidates and top-k, one matrix multiply and one top-k per chunk of tiles); this bounds
            the memory that buffer takes, in MiB (about 13x the features of the R recent frames:
            1.9 GiB at 480p with the CRW encoder). Past it, or at 0, every frame's regions are cut
            afresh (:func:`~corrflow.propagation.functional.mixed_context_attention`).
        first_stride: with ``global_first``, the frames seen whole are attended at 1 / first_stride
            of the grid (features average-pooled and re-normalised, labels average-pooled): an
            approximation, first_stride^2 fewer affinities to them; 1 (the protocol) by default.
            ``protocol=crw_fast`` uses 2 with 10 recent frames. The recent frames stay whole.
        device: where features and labels live.
        harden: what 'argmax' feed-back means for these labels, (1, D, h, w) -> (1, D, h, w);
            default :func:`onehot_argmax` over channels (masks). Keypoint heat maps pass their own
            (:meth:`corrflow.propagation.targets.KeypointTargets.harden`).
    """

    def __init__(
        self,
        features: nn.Module,
        *,
        n_recent: int = 20,
        global_first: bool = True,
        radius: int = 12,
        window: str = "disc",
        temperature: float = 0.05,
        topk: int | None = 10,
        feedback: str = "soft",
        normalize: bool = True,
        backend: str = "auto",
        region_cache_mb: float = 3072,
        first_stride: int = 1,
        device: torch.device | str = "cpu",
        harden: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if feedback not in FEEDBACK:
            raise ValueError(f"feedback must be one of {FEEDBACK}, got {feedback!r}")
        if n_recent < 0 or (n_recent == 0 and not global_first):
            raise ValueError("the context is empty: give n_recent >= 1 or global_first=True")
        window_reach(radius, window)  # validates the window and radius
        if window == "disc" and not global_first:
            raise ValueError(
                "window='disc' (CRW's round window) is implemented for the CRW context (global_first=True); "
                "use window='square' without a global first frame"
            )
        if not hasattr(features, "stride"):
            raise TypeError(f"the feature extractor {type(features).__name__} has no 'stride' attribute")
        self.features = features
        self.stride = int(features.stride)
        self.n_recent = n_recent
        self.global_first = global_first
        self.radius = radius
        self.window = window
        self.temperature = temperature
        self.topk = topk
        self.feedback = feedback
        self.normalize = normalize
        self.backend = backend
        self.region_cache_mb = float(region_cache_mb)
        if int(first_stride) < 1 or (int(first_stride) > 1 and not global_first):
            raise ValueError(f"first_stride must be >= 1 and needs global_first=True, got {first_stride} (global_first={global_first})")
        self.first_stride = int(first_stride)
        self.device = torch.device(device)
        self.harden = harden or onehot_argmax
        self.reset()

    def reset(self) -> None:
        """Forget the video: the next :meth:`step` must bring the first frame's labels."""
        self._first: tuple[Tensor, Tensor] | None = None  # (features (1,C,h,w), labels (1,D,h,w))
        self._joined: list[tuple[int, Tensor, Tensor]] = []  # frames where objects joined: (index, features, labels)
        self._recent: deque[tuple[int, Tensor, Tensor]] = deque(maxlen=self.n_recent)
        self._ring: tuple[Tensor, Tensor] | None = None  # (1, nTiles, R, U, C) key and (.., D) label regions of the recent frames
        self._ring_frames: list[int | None] = []  # the frame index each of the R slots holds
        self._whole: list[tuple[Tensor, Tensor]] | None = None  # the frames seen whole, as attended (pooled by first_stride)
        self._t = 0

    @property
    def context(self) -> list[tuple[int, Tensor]]:
        """What the next step reads, in stack order: (frame index from the first frame, (D, h, w) labels);
        with ``global_first`` the first frame and the frames where objects joined come first."""
        if self._first is None:
            return []
        first = [(0, self._first[1][0]), *((i, v[0]) for i, _, v in self._joined)] if self.global_first else []
        return first + [(i, v[0]) for i, _, v in self._recent]

    @property
    def context_frames(self) -> list[int]:
        """Indices (counted from the first frame) of the frames the next step reads, in stack order."""
        return [i for i, _ in self.context]

    @torch.no_grad()
    def embed(self, frame: Tensor) -> Tensor:
        """(3, H, W) or (1, 3, H, W) RGB in [0, 1] -> (1, C, h, w) features (L2-normalised if set)."""
        x = frame if frame.dim() == 4 else frame[None]
        x = pad_to_stride(x.to(self.device, torch.float32), self.stride)
        with record_function("propagate.encoder"):
            feats = self.features(x)
        grid = (x.shape[-2] // self.stride, x.shape[-1] // self.stride)
        if tuple(feats.shape[-2:]) != grid:
            raise ValueError(
                f"the feature extractor gave a {tuple(feats.shape[-2:])} map for a {tuple(x.shape[-2:])} input; "
                f"expected {grid} at its stride {self.stride}"
            )
        feats = feats.float()
        return F.normalize(feats, dim=1) if self.normalize else feats

    @torch.no_grad()
    def step(self, frame: Tensor, mask: Tensor | None = None) -> Tensor:
        """Feed the next frame; return its labels on the feature grid.

        Args:
            frame: (3, H, W) RGB in [0, 1].
            mask: (D, h, w) labels of this frame on its feature grid, for the first frame
                (h, w = ceil(H / stride), ceil(W / stride)); ``None`` for the frames to predict.
                Giving it again later restarts the video from that frame.

        Returns:
            (D, h, w) labels: ``mask`` itself when given, else the propagated soft labels.
        """
        feats = self.embed(frame)
        if mask is not None:
            labels = mask.to(self.device, torch.float32)[None]
            if labels.dim() != 4 or labels.shape[-2:] != feats.shape[-2:]:
                raise ValueError(f"mask must be (D, {feats.shape[-2]}, {feats.shape[-1]}), got {tuple(mask.shape)}")
            self.reset()
            self._first = (feats, labels)
            self._remember(feats, labels)
            return labels[0]
        if self._first is None:
            raise RuntimeError("the first step of a video needs its labels: step(frame, mask)")
        pred = self._propagate(feats)
        stored = self.harden(pred) if self.feedback == "argmax" else pred
        self._remember(feats, stored)
        return pred[0]

    @torch.no_grad()
    def join(self, frame: Tensor, new: Tensor) -> Tensor:
        """Feed the next frame, where K new objects are given: predict the objects tracked so far,
        then add the new ones' channels.

        The frame's labels are ``cat(base * (1 - s), new)``: ``base`` the (D, h, w) prediction
        (hardened with arg-max feed-back), ``s`` the new objects' share of each cell (their mask
        wins where it is given). Every label map already in the context gets K zero channels; the
        frame enters the recent queue and, with ``global_first``, stays a reference seen whole.

        Args:
            frame: (3, H, W) RGB in [0, 1].
            new: (K, h, w) the new objects' shares of each feature cell (their pooled masks).

        Returns:
            (D + K, h, w) labels of the frame.
        """
        if self._first is None:
            raise RuntimeError("objects can join only a started video: the first step needs step(frame, mask)")
        feats = self.embed(frame)
        new = new.to(self.device, torch.float32)[None]
        if new.dim() != 4 or new.shape[-2:] != feats.shape[-2:]:
            raise ValueError(f"new must be (K, {feats.shape[-2]}, {feats.shape[-1]}), got {tuple(new.shape[1:])}")
        pred = self._propagate(feats)
        base = self.harden(pred) if self.feedback == "argmax" else pred
        labels = torch.cat([base * (1.0 - new.sum(1, keepdim=True).clamp(max=1.0)), new], dim=1)
        k = new.shape[1]
        pad = lambda v: torch.cat([v, v.new_zeros((v.shape[0], k, *v.shape[2:]))], dim=1)  # noqa: E731
        self._first = (self._first[0], pad(self._first[1]))
        self._joined = [(i, f, pad(v)) for i, f, v in self._joined]
        self._recent = deque(((i, f, pad(v)) for i, f, v in self._recent), maxlen=self.n_recent)
        self._ring, self._ring_frames, self._whole = None, [], None  # the labels grew channels
        if self.global_first:
            self._joined.append((self._t, feats, labels))
        self._remember(feats, labels)
        return labels[0]

    def _remember(self, feats: Tensor, labels: Tensor) -> None:
        if self.n_recent:
            if not self._recent:  # the start of the video: pad the queue with the first frame
                self._recent.extend((self._t, feats, labels) for _ in range(self.n_recent))
            else:
                self._recent.append((self._t, feats, labels))
        self._t += 1

    def _seen_whole(self) -> list[tuple[Tensor, Tensor]]:
        """The first frame and the frames where objects joined, as the global part attends them:
        themselves, or pooled by ``first_stride`` (once, until the context changes)."""
        if self._whole is None:
            k = self.first_stride
            frames = [self._first, *((f, v) for _, f, v in self._joined)]
            if k == 1:
                self._whole = frames
            else:
                pooled = [(F.avg_pool2d(f, k, ceil_mode=True), F.avg_pool2d(v, k, ceil_mode=True)) for f, v in frames]
                self._whole = [(F.normalize(f, dim=1) if self.normalize else f, v) for f, v in pooled]
        return self._whole

    def _propagate(self, query: Tensor) -> Tensor:
        """(1, C, h, w) target features -> (1, D, h, w) labels from the current context."""
        (first_feats, first_labels), *joined = self._seen_whole()
        if self.global_first and self.topk is not None and self.n_recent and not self._joined and self._fits_region_cache(query):
            return self._propagate_regions(query, first_feats, first_labels)
        if self.n_recent:
            keys = torch.stack([f[0] for _, f, _ in self._recent])[None]  # (1, R, C, h, w)
            values = torch.stack([v[0] for _, _, v in self._recent])[None]  # (1, R, D, h, w)
        else:
            keys = query.new_zeros((1, 0, *query.shape[1:]))
            values = first_labels.new_zeros((1, 0, *first_labels.shape[1:]))
        if self.global_first:
            if self._joined:  # the first frame and the frames where objects joined, all seen whole
                first_feats = torch.stack([first_feats[0], *(f[0] for f, _ in joined)])[None]  # (1, G, C, h0, w0)
                first_labels = torch.stack([first_labels[0], *(v[0] for _, v in joined)])[None]  # (1, G, D, h0, w0)
            return mixed_context_attention(
                query, first_feats, first_labels, keys, values,
                radius=self.radius, temperature=self.temperature, topk=self.topk, window=self.window,
            )  # fmt: skip
        return restricted_attention(
            query, keys, values, radius=self.radius, temperature=self.temperature, topk=self.topk, backend=self.backend
        )

    # -- the CRW context with each recent frame's regions laid out once -------------------------
    _TILE = 8

    def _fits_region_cache(self, query: Tensor) -> bool:
        if self.region_cache_mb <= 0:
            return False
        h, w = query.shape[-2:]
        n_tiles = -(-h // self._TILE) * -(-w // self._TILE)
        u = len(region_keys(self.radius, self._TILE, self.window))
        per_frame = n_tiles * u * (query.shape[1] + self._first[1].shape[1]) * query.element_size()
        return per_frame * (self.n_recent + 1) <= self.region_cache_mb * 2**20  # the R slots and one frame being laid out

    def _sync_ring(self) -> tuple[Tensor, Tensor]:
        """The ring holds the recent queue's frames, each as often as the queue does (the padded
        start): slots of frames that left are refilled with the frames that came, each laid out once."""
        wanted = Counter(i for i, _, _ in self._recent)
        if self._ring is None:
            self._ring_frames = [None] * self.n_recent
        held = Counter(i for i in self._ring_frames if i is not None)
        free = []
        for slot, i in enumerate(self._ring_frames):
            if i is None or held[i] > wanted[i]:
                free.append(slot)
                if i is not None:
                    held[i] -= 1
        entries = {i: (f, v) for i, f, v in self._recent}
        for i, count in wanted.items():
            missing = count - held[i]
            if missing <= 0:
                continue
            f, v = entries[i]
            kr = frame_regions(f, self.radius, self._TILE, self.window)  # (1, nTiles, U, C)
            vr = frame_regions(v, self.radius, self._TILE, self.window)
            if self._ring is None:
                self._ring = (
                    kr.new_empty((1, kr.shape[1], self.n_recent, *kr.shape[2:])),
                    vr.new_empty((1, vr.shape[1], self.n_recent, *vr.shape[2:])),
                )
            for _ in range(missing):
                slot = free.pop()
                self._ring[0][:, :, slot] = kr
                self._ring[1][:, :, slot] = vr
                self._ring_frames[slot] = i
        return self._ring

    def _propagate_regions(self, query: Tensor, first_feats: Tensor, first_labels: Tensor) -> Tensor:
        with record_function("propagate.layout"):
            keys, values = self._sync_ring()
        return mixed_context_attention_regions(
            query, first_feats, first_labels, keys, values,
            radius=self.radius, temperature=self.temperature, topk=self.topk, tile=self._TILE, window=self.window,
        )  # fmt: skip
