"""One propagation from the page: the same configs and the same per-video stepping as
``tools/propagate.py``, on the one clip in memory, with a progress callback and cancelling.

The segmenter is built from ``conf/propagate.yaml`` composed with ``features=<name>
protocol=<name>`` (its ``method.segmenter``, :func:`corrflow.propagation.methods.label_propagation`),
the targets from its ``task.targets`` (:class:`~corrflow.propagation.targets.MaskTargets`, with the
protocol's ``label_resize``; masks on several frames are keyframes,
:mod:`corrflow.propagation.keyframes`), and the clip is stepped through by the run's own
``propagate_video``, which writes the palette PNGs. Output, under ``run_dir``::

    results/<name>/%05d.png     one palette PNG a frame (DAVIS layout), the size of the clip's frames
    masks.zip                   Annotations/<name>/%05d.png (the targets' submission packing)
    overlays/%05d.jpg           each frame with its masks drawn over it
    overlay.gif                 the same, animated
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image

from corrflow.data.vos.clip import ClipVideo
from corrflow.utils.conf import CONF_DIR, FEATURES, PROTOCOLS, compose_propagate

__all__ = ["Cancelled", "Propagation", "Segmenters", "propagate_clip"]

log = logging.getLogger(__name__)

ZIP_NAME = "masks.zip"


class Cancelled(Exception):
    """The user cancelled the run."""


class Segmenters:
    """Builds (and keeps the last of) the per-video segmenter for a choice of features, protocol
    and checkpoint, from the propagation configs. The features load once per choice."""

    def __init__(self, *, device: torch.device | str = "cpu", conf_dir: str | Path = CONF_DIR) -> None:
        self.device, self.conf_dir = torch.device(device), conf_dir
        self._key, self._built = None, None
        self._lock = threading.Lock()

    def config(self, features: str, protocol: str, ckpt: str | None) -> DictConfig:
        """The composed propagation config; errors name the bad choice."""
        if features not in FEATURES:
            raise ValueError(f"features must be one of {', '.join(FEATURES)}, got {features!r}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        cfg = compose_propagate([f"features={features}", f"protocol={protocol}"], conf_dir=self.conf_dir)
        cfg.ckpt = str(ckpt).strip() if ckpt and str(ckpt).strip() else None
        return cfg

    def get(self, features: str, protocol: str, ckpt: str | None) -> tuple[DictConfig, object, float]:
        """``(config, segmenter, seconds it took to build; 0 when kept from the last call)``.

        Raises:
            ValueError / FileNotFoundError / ImportError (possibly inside Hydra's
            InstantiationException): no checkpoint, a checkpoint of the wrong kind, a missing package.
        """
        cfg = self.config(features, protocol, ckpt)
        key = (features, protocol, cfg.ckpt if features == "checkpoint" else None)
        with self._lock:
            if key == self._key:
                return cfg, self._built, 0.0
            t0 = time.perf_counter()
            targets = instantiate(cfg.task.targets, validate_annotations=False)
            if cfg.get("seed") is not None:
                torch.manual_seed(int(cfg.seed))
            segmenter = instantiate(cfg.method.segmenter)(device=self.device, targets=targets)
            self._key, self._built = key, segmenter
            return cfg, segmenter, time.perf_counter() - t0


class _Recorder:
    """The run's overlay recorder, asked once for every frame written: reports progress, stops a
    cancelled run, keeps every drawn frame."""

    def __init__(self, n_frames: int, on_frame: Callable[[int, int], None] | None, cancel: threading.Event | None) -> None:
        self.n, self.on_frame, self.cancel = n_frames, on_frame, cancel
        self.done = 0
        self.images: dict[int, np.ndarray] = {}

    def wants(self, t: int) -> bool:
        self.done += 1
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled(f"cancelled after {self.done - 1} of {self.n} frames")
        if self.on_frame is not None:
            self.on_frame(self.done, self.n)
        return True

    def add(self, t: int, image: np.ndarray) -> None:
        self.images[t] = image


@dataclass
class Propagation:
    """What a run produced (paths under ``run_dir``) and how long it took."""

    run_dir: Path
    results_dir: Path
    zip_path: Path
    gif_path: Path
    overlay_paths: list[Path]
    n_frames: int
    seconds: float  # the propagation (stepping, decoding, writing), without loading the features
    load_seconds: float
    keyframes: list[int]
    summary: str


def propagate_clip(
    clip: ClipVideo,
    run_dir: str | Path,
    *,
    segmenters: Segmenters,
    features: str = "lab",
    protocol: str = "crw",
    ckpt: str | None = None,
    on_frame: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    fps: float = 8.0,
) -> Propagation:
    """Propagate the masks given on ``clip`` (:meth:`ClipVideo.with_masks`) through all its frames.

    Masks on frame 0 only: one forward pass (DAVIS's protocol). Masks on other or several frames:
    those frames are keyframes (forward and backward passes between them, fused linearly); they
    must all hold the same objects.

    Args:
        on_frame: called as ``on_frame(done, total)`` after each frame is written.
        cancel: when set, the run stops at the next frame with :class:`Cancelled`.

    Raises:
        ValueError: no mask given, keyframes with different objects, bad choices or checkpoints
        (possibly wrapped by Hydra's InstantiationException). Cancelled.
    """
    from corrflow.propagation.run import propagate_video

    if not clip.masks:
        raise ValueError("no mask given: paint the objects on a frame (or load a palette PNG) first")
    run_dir = Path(run_dir)
    cfg, segmenter, load_seconds = segmenters.get(features, protocol, ckpt)
    given = clip.given_frames
    keyframes = None if given == [0] else given
    targets = instantiate(cfg.task.targets, validate_annotations=False, keyframes=keyframes, late_objects=False, submission=ZIP_NAME)
    targets.check(clip)  # keyframes with different objects fail here, before anything is written
    results_dir = run_dir / "results"
    recorder = _Recorder(len(clip), on_frame, cancel)
    t0 = time.perf_counter()
    with torch.no_grad():
        propagate_video(clip, segmenter=segmenter, targets=targets, results_dir=results_dir, recorder=recorder, progress=False)
    seconds = time.perf_counter() - t0
    zip_path = targets.finalize(results_dir=results_dir, dataset=SimpleNamespace(names=[clip.name]), output_dir=run_dir)

    overlays = run_dir / "overlays"
    overlays.mkdir(parents=True, exist_ok=True)
    paths, pictures = [], []
    for t in range(len(clip)):
        picture = Image.fromarray(recorder.images[t])
        path = overlays / f"{t:05d}.jpg"
        picture.save(path, quality=90)
        paths.append(path)
        pictures.append(picture)
    gif_path = run_dir / "overlay.gif"
    pictures[0].save(gif_path, save_all=True, append_images=pictures[1:], loop=0, duration=round(1000 / fps))

    n = len(clip)
    how = "from frame 0" if keyframes is None else f"from keyframes {keyframes}"
    summary = (
        f"{n} frames ({clip.size[1]}x{clip.size[0]}) propagated {how} in {seconds:.1f} s "
        f"({seconds / n:.3f} s a frame) with features={features}, protocol={protocol} on {segmenters.device.type}"
        + (f"; the features loaded in {load_seconds:.1f} s" if load_seconds > 0 else "")
    )
    log.info("demo: %s -> %s", summary, run_dir)
    return Propagation(run_dir, results_dir / clip.name, Path(zip_path), gif_path, paths, n, seconds, load_seconds, list(given), summary)
