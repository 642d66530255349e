"""What a corrflow checkpoint holds besides Lightning's own keys, and how to read an encoder back.

A training checkpoint (Lightning's ``.ckpt``) carries ``checkpoint["corrflow"]``:
``{"format": 1, "encoder": <ResNetEncoder.config>, "encoder_prefix": "net.encoder.", ...}``.
Downstream code (propagation, segmenters) rebuilds the encoder from that alone.

Files written before the package was laid out by domain load as they did: :func:`read_checkpoint`
finds any pickled class at its current module and rewrites the ``_target_`` paths of
``hyper_parameters`` (:mod:`corrflow.utils.moved`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from corrflow.models.encoder import ResNetEncoder
from corrflow.utils.moved import legacy_pickle, upgrade_targets

FORMAT = 1


def encoder_payload(encoder: ResNetEncoder, *, prefix: str) -> dict[str, Any]:
    """The ``checkpoint["corrflow"]`` entry for a module whose encoder lives at ``prefix``."""
    return {"format": FORMAT, "encoder": dict(encoder.config), "encoder_prefix": prefix}


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format (a zip archive), since PyTorch 1.6
PICKLE_MAGIC = b"\x80"  # torch.save's legacy format: a pickle, protocol 2 or later


def not_a_checkpoint(path: str | os.PathLike) -> str | None:
    """Why the file at ``path`` cannot be a PyTorch checkpoint, judged from its first bytes
    (``"is empty, ..."``, ``"is not a PyTorch checkpoint: it is a text file ..."``), or None when
    it starts as ``torch.save`` writes (a zip archive, or a legacy pickle). Does not load it."""
    with open(path, "rb") as f:
        head = f.read(256)
    if not head:
        return "is empty, not a PyTorch checkpoint"
    if head.startswith((ZIP_MAGIC, PICKLE_MAGIC)):
        return None
    expect = "pass a .ckpt written by tools/train.py or tools/finetune.py (or any torch.save file)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c.isspace() for c in text):
        first = text.strip().splitlines()[0][:40] if text.strip() else ""
        return f"is not a PyTorch checkpoint: it is a text file (it starts {first!r}); {expect}"
    return f"is not a PyTorch checkpoint (neither a zip archive nor a pickle, as torch.save writes); {expect}"


def read_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu", what: str = "checkpoint") -> tuple[dict, dict | None]:
    """A checkpoint file and its ``corrflow`` entry (None when it has none).

    Raises:
        FileNotFoundError: no file at ``path`` (the message says ``<what> not found``).
        ValueError: the file is not a PyTorch checkpoint (a text file, an empty one: see
            :func:`not_a_checkpoint`), or one that cannot be read (truncated, damaged).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False, pickle_module=legacy_pickle)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        problem = not_a_checkpoint(path)  # in the user's words, not pickle's ("could not find MARK")
        if problem:
            raise ValueError(f"{path} {problem}") from e
        raise ValueError(f"{path}: cannot read this PyTorch checkpoint; is it truncated or damaged? ({e})") from e
    if isinstance(ckpt, dict):  # dotted paths recorded by older code, as the current code spells them
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if key in ckpt:
                ckpt[key] = upgrade_targets(ckpt[key])
    meta = ckpt.get("corrflow") if isinstance(ckpt, dict) else None
    return ckpt, meta if isinstance(meta, dict) else None


def load_encoder(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu", train: bool = False
) -> ResNetEncoder:
    """Rebuild the encoder saved in a corrflow training checkpoint, with its trained weights.

    The encoder comes back in eval mode: BatchNorm normalises with the running statistics saved
    in the checkpoint and a forward leaves them unchanged. ``train=True`` returns it in training
    mode instead (BatchNorm on batch statistics, updating the running ones), for fine-tuning.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a corrflow checkpoint (no ``corrflow`` entry), is a segmenter's
            (``corrflow.kind``: the message names the kind), or its weights do not fit the encoder
            it describes.
    """
    path = Path(path)
    ckpt, meta = read_checkpoint(path, map_location=map_location)
    if isinstance(meta, dict) and "encoder" not in meta and "kind" in meta:
        kind = str(meta["kind"])
        raise ValueError(
            f"{path} is an {kind.upper()} segmenter checkpoint (tools/finetune.py), not a corrflow training checkpoint "
            f"(tools/train.py) with an encoder: pass one of those here; segment videos with this one by "
            f"`tools/propagate.py method={kind} ckpt={path}`"
        )
    if not isinstance(meta, dict) or "encoder" not in meta:
        raise ValueError(
            f"{path}: not a corrflow training checkpoint (no 'corrflow' entry with an encoder description); "
            "train one with tools/train.py"
        )
    if meta.get("format", 0) > FORMAT:
        raise ValueError(f"{path}: checkpoint format {meta['format']} is newer than this corrflow ({FORMAT})")
    encoder = ResNetEncoder(**meta["encoder"])
    prefix = meta["encoder_prefix"]
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    try:
        encoder.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: encoder weights do not match the described encoder: {e}") from e
    return encoder.train(train)
