"""What a segmenter checkpoint holds besides Lightning's own keys, and how to read a segmenter back.

A segmenter training checkpoint (``tools/finetune.py``) carries ``checkpoint["corrflow"]``:
``{"format": 1, "kind": "stm" | "osvos" | "osvos_contour", "backbone": <SegmentationBackbone.config>, "segmenter":
<the segmenter's config>, "prefix": "net."}``. It has no ``encoder`` entry, so
:func:`corrflow.models.checkpoint.load_encoder` refuses it, and a pretraining checkpoint (which
has no ``kind``) is refused here: each with an error that says which kind of file it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from corrflow.models.backbone import SegmentationBackbone, load_state_exactly
from corrflow.models.checkpoint import read_checkpoint

__all__ = ["FORMAT", "load_segmenter", "recorded_segmenter_config", "segmenter_payload"]

FORMAT = 1

# settings added to a segmenter's config after checkpoints were written without them, with the
# value those checkpoints were trained under (not today's default)
_BEFORE_RECORDED: dict[str, dict[str, Any]] = {
    "stm": {"kv_stage": None},  # keys and values from the coarsest map
}


def _segmenter_classes() -> dict[str, type[nn.Module]]:
    from corrflow.models.segmenters.osvos import OSVOSNet
    from corrflow.models.segmenters.stm import STMSegmenter

    return {"stm": STMSegmenter, "osvos": OSVOSNet, "osvos_contour": OSVOSNet}


def segmenter_payload(net: nn.Module, *, kind: str, prefix: str) -> dict[str, Any]:
    """The ``checkpoint["corrflow"]`` entry for a segmenter ``net`` living at ``prefix`` of the
    module's state dict (its ``backbone``'s config describes the backbone)."""
    return {"format": FORMAT, "kind": kind, "backbone": dict(net.backbone.config), "segmenter": dict(net.config), "prefix": prefix}


def recorded_segmenter_config(meta: dict[str, Any]) -> dict[str, Any]:
    """The segmenter's config a checkpoint's ``corrflow`` record ``meta`` holds, with the settings
    it predates filled in as it was trained (so that today's defaults do not rebuild it otherwise)."""
    return {**_BEFORE_RECORDED.get(str(meta.get("kind")), {}), **(meta.get("segmenter") or {})}


def load_segmenter(path: str | os.PathLike, *, kind: str = "stm", map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the segmenter saved in a ``tools/finetune.py`` checkpoint, with its trained weights,
    in eval mode (the pretraining checkpoint its backbone started from is not needed).

    Raises:
        FileNotFoundError: no file. ValueError: not a corrflow checkpoint, a pretraining
        checkpoint, another kind of segmenter, or weights that do not fit (naming the layers).
    """
    path = Path(path)
    ckpt, meta = read_checkpoint(path, map_location=map_location, what="segmenter checkpoint")
    if meta is None:
        raise ValueError(f"{path}: not a corrflow checkpoint (no 'corrflow' entry); train a segmenter with tools/finetune.py")
    if "kind" not in meta:
        raise ValueError(
            f"{path} is a corrflow pretraining checkpoint (tools/train.py), not a {kind.upper()} segmenter checkpoint: "
            f"fine-tune one from it with `tools/finetune.py experiment={kind} model.backbone.init={path}`"
        )
    if meta["kind"] != kind:
        raise ValueError(f"{path} is a {str(meta['kind']).upper()} checkpoint, not a {kind.upper()} one")
    if meta.get("format", 0) > FORMAT:
        raise ValueError(f"{path}: checkpoint format {meta['format']} is newer than this corrflow ({FORMAT})")
    classes = _segmenter_classes()
    backbone = SegmentationBackbone.from_config(meta["backbone"])
    segmenter = recorded_segmenter_config(meta)
    if kind.startswith("osvos") and "stages" not in segmenter:
        # written before OSVOS recorded its side stages: they were the last n_sides of all side
        # stages (on the CRW variant the head too, repeating layer3)
        segmenter["stages"] = backbone.side_stages[-int(segmenter["n_sides"]) :]
    net = classes[kind](backbone=backbone, **segmenter)
    prefix = meta["prefix"]
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    load_state_exactly(net, state, source=str(path))
    return net.eval()
