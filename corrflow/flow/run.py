"""``flow(cfg)``: displacement and confidence between consecutive frames of videos, read off a
feature extractor's local correlation (``conf/features``: a corrflow checkpoint, a random encoder,
ImageNet EfficientNet-Lite0 or raw Lab pixels) with no further training; ``tools/flow.py`` is its
Hydra entry point.

Each frame's features are L2-normalised and correlated with the next frame's over a
(2 radius + 1)^2 window; the displacement is read by the kernel soft-argmax (or soft-argmax /
arg-max) and the confidence is the best correlation
(:func:`corrflow.models.motion.displacement.motion_from_features`).

Output, under ``cfg.output_dir``, for each video ``<name>`` (a file's stem, a frame folder's name)::

    <name>/arrays/%05d.npz      frame t -> t+1: displacement (2, h, w) float32 (dx, dy) in feature
                                cells (pixels = cells x stride), confidence (h, w) float32 in
                                [-1, 1], stride, frame_size (H, W) of the frames read
    <name>/flow/%05d.png        the displacement on the flow colour wheel, at the frame's size
                                (saturated at ``radius`` cells)
    <name>/side_by_side.gif     frame | flow | confidence, and a PNG strip of a few of them
    config.yaml                 the resolved config of the latest run

Videos stream: frames are read ``chunk`` at a time and only the previous frame's features are
kept, so memory does not grow with a video's length.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from tqdm import tqdm

from corrflow.data.video.readers import num_frames, read_frames
from corrflow.data.video.sources import VideoSource, discover_sources
from corrflow.flow.pictures import confidence_picture, flow_picture
from corrflow.models.motion.displacement import ESTIMATORS, motion_from_features
from corrflow.propagation.run import resolve_device
from corrflow.utils.grid import pad_to_stride
from corrflow.utils.overlay import image_strip

__all__ = ["flow", "flow_video"]

log = logging.getLogger(__name__)


def _video_name(source: VideoSource) -> str:
    p = Path(source.path)
    return p.stem if source.kind == "video" else p.name


def _resize(frame: np.ndarray, max_side: int | None) -> np.ndarray:
    h, w = frame.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return frame
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR))


def _save_png(path: Path, image: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    Image.fromarray(image).save(tmp)
    tmp.replace(path)


def _save_npz(path: Path, **arrays: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


@torch.no_grad()
def flow_video(
    source: VideoSource,
    *,
    features: torch.nn.Module,
    out_dir: Path,
    device: torch.device,
    radius: int = 7,
    estimator: str = "kernel_soft_argmax",
    sigma: float = 5.0,
    beta: float = 100.0,
    max_side: int | None = None,
    chunk: int = 16,
    recorder_factory=None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write one video's displacements, confidences and pictures (see the module docstring).

    Args:
        source: the video (a file or a frame folder).
        features: (B, 3, H, W) RGB in [0, 1] -> (B, C, H / s, W / s), with a ``stride`` s.
        max_side: frames whose longer side exceeds it are resized down to it first (None: as read).
        chunk: frames decoded at a time.
        recorder_factory: ``OverlayRecorder`` partial for the side-by-side pictures (None: none).

    Returns:
        {"video", "pairs", "seconds", "mean_confidence", "mean_displacement" (cells)}.

    Raises:
        ValueError: a video of fewer than 2 frames; VideoReadError: a frame that cannot be read (named).
    """
    n = num_frames(source)
    if n < 2:
        raise ValueError(f"{source.path}: {n} frame(s); the flow needs at least 2 frames")
    stride = int(features.stride)
    arrays_dir, flow_dir = out_dir / "arrays", out_dir / "flow"
    arrays_dir.mkdir(parents=True, exist_ok=True)
    flow_dir.mkdir(parents=True, exist_ok=True)
    recorder = recorder_factory(n_frames=n - 1) if recorder_factory is not None else None
    name = _video_name(source)
    bar = tqdm(total=n, desc=name, unit="frame", leave=False, disable=not progress)
    prev_feat, prev_frame = None, None
    conf_sum, disp_sum, cells = 0.0, 0.0, 0
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        for t, frame in enumerate(read_frames(source, range(start, min(start + chunk, n))), start=start):
            frame = _resize(frame, max_side)
            if prev_frame is not None and frame.shape != prev_frame.shape:
                raise ValueError(f"{source.path}: frame {t} is {frame.shape[:2]}, frame {t - 1} was {prev_frame.shape[:2]}")
            image = torch.from_numpy(frame).to(device).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)
            feat = features(pad_to_stride(image, stride)[None])  # (1, C, h, w)
            if prev_feat is not None:
                disp, conf = motion_from_features(prev_feat, feat, radius=radius, estimator=estimator, sigma=sigma, beta=beta)
                disp, conf = disp[0].float().cpu(), conf[0, 0].float().cpu()  # (2, h, w), (h, w)
                h, w = frame.shape[:2]
                _save_npz(arrays_dir / f"{t - 1:05d}.npz", displacement=disp.numpy(), confidence=conf.numpy(),
                          stride=np.int64(stride), frame_size=np.array([h, w], np.int64))  # fmt: skip
                up = lambda x: x.repeat_interleave(stride, -2).repeat_interleave(stride, -1)[..., :h, :w]  # noqa: E731
                picture = flow_picture(up(disp), max_norm=float(radius))
                _save_png(flow_dir / f"{t - 1:05d}.png", picture)
                if recorder is not None and recorder.wants(t - 1):
                    recorder.add(t - 1, image_strip([prev_frame, picture, confidence_picture(up(conf))]))
                conf_sum += float(conf.sum())
                disp_sum += float(disp.norm(dim=0).sum())
                cells += conf.numel()
            prev_feat, prev_frame = feat, frame
            bar.update(1)
    bar.close()
    seconds = time.perf_counter() - t0
    if recorder is not None:
        recorder.save(out_dir / "side_by_side.png", out_dir / "side_by_side.gif")
    return {"video": name, "pairs": n - 1, "seconds": round(seconds, 3), "mean_confidence": conf_sum / max(cells, 1),
            "mean_displacement": disp_sum / max(cells, 1)}  # fmt: skip


def flow(cfg: DictConfig) -> dict[str, Any]:
    """Every video of ``cfg.video`` (a video file, a frame folder, or a folder or list of them).

    Returns:
        {"output_dir", "videos": [flow_video's rows]}.
    """
    if cfg.estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {cfg.estimator!r}")
    if int(cfg.radius) < 1:
        raise ValueError(f"radius must be >= 1, got {cfg.radius}")
    sources = discover_sources(cfg.video, decoder=str(cfg.get("decoder", "auto")))
    device = resolve_device(str(cfg.device))
    features = instantiate(cfg.features.extractor).to(device).eval()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        text = OmegaConf.to_yaml(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - e.g. ${hydra:...} outside a Hydra run (the compose API)
        text = OmegaConf.to_yaml(cfg)
    (out / "config.yaml").write_text(text)
    recorder_factory = instantiate(cfg.overlay) if cfg.get("overlay") else None
    log.info("flow: %d video(s), features=%s (stride %d) on %s -> %s", len(sources), cfg.features.name,
             features.stride, device, out)  # fmt: skip
    rows = []
    names = [_video_name(s) for s in sources]
    for source, name in zip(sources, names, strict=True):
        if names.count(name) > 1:
            name = str(Path(source.path)).strip("/").replace("/", "_")
        row = flow_video(source, features=features, out_dir=out / name, device=device, radius=int(cfg.radius),
                         estimator=str(cfg.estimator), sigma=float(cfg.sigma), beta=float(cfg.beta),
                         max_side=cfg.get("max_side"), chunk=int(cfg.chunk), recorder_factory=recorder_factory,
                         progress=bool(cfg.progress))  # fmt: skip
        log.info("%s: %d pairs in %.1f s; mean confidence %.3f, mean displacement %.2f cells", row["video"], row["pairs"],
                 row["seconds"], row["mean_confidence"], row["mean_displacement"])  # fmt: skip
        rows.append(row)
    for row in rows:
        print(f"{row['video']}: {row['pairs']} pairs, {row['seconds']:.1f} s, mean confidence {row['mean_confidence']:.3f}, "
              f"mean displacement {row['mean_displacement']:.2f} cells -> {out / row['video']}")  # fmt: skip
    return {"output_dir": str(out), "videos": rows}
