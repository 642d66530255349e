"""Lab colour quantisation: k-means colour bins on the (a, b) channels.

The bins are an artefact: fitted once (``fit_colour_bins``, or ``tools/fit_colour_bins.py``),
saved as ``.npz`` with its metadata, reused by later runs and stored inside checkpoints.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path

import kornia
import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from corrflow.data.video.readers import VideoReadError, num_frames, read_frames
from corrflow.data.video.resize import resize_frames
from corrflow.data.video.sources import VideoSource

log = logging.getLogger(__name__)

ARTEFACT_FORMAT = 1


def rgb_to_ab(rgb: Tensor) -> Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> (..., 2, H, W) Lab a, b (roughly [-128, 127])."""
    return kornia.color.rgb_to_lab(rgb)[..., 1:, :, :]


class ColourQuantizer(nn.Module):
    """Nearest-centroid quantisation of Lab (a, b).

    Args:
        centroids: (K, 2) bin centres in Lab (a, b) units.
    """

    def __init__(self, centroids: Tensor | np.ndarray) -> None:
        super().__init__()
        c = torch.as_tensor(np.asarray(centroids), dtype=torch.float32)
        if c.dim() != 2 or c.shape[1] != 2:
            raise ValueError(f"colour-bin centroids must have shape (K, 2), got {tuple(c.shape)}")
        self.register_buffer("centroids", c)

    @property
    def n_bins(self) -> int:
        return self.centroids.shape[0]

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, n_bins: int | None = None) -> ColourQuantizer:
        centroids, _ = load_colour_bins(path, n_bins=n_bins)
        return cls(centroids)

    @torch.no_grad()
    def forward(self, rgb: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, H, W) int64 bin index."""
        ab = rgb_to_ab(rgb.float())  # (B, 2, H, W)
        b, _, h, w = ab.shape
        flat = ab.permute(0, 2, 3, 1).reshape(-1, 2)
        idx = torch.cdist(flat, self.centroids.to(flat)).argmin(dim=1)
        return idx.view(b, h, w)

    def to_rgb(self, rgb: Tensor, probs: Tensor) -> Tensor:
        """Colourise: the lightness of ``rgb`` with the expected (a, b) of ``probs``.

        Args:
            rgb: (B, 3, H, W) in [0, 1] (its L channel is kept).
            probs: (B, K, H, W) bin probabilities (one-hot for quantised ground truth).
        Returns:
            (B, 3, H, W) RGB in [0, 1].
        """
        lab = kornia.color.rgb_to_lab(rgb.float())
        ab = torch.einsum("bkhw,kc->bchw", probs.float(), self.centroids.float())
        return kornia.color.lab_to_rgb(torch.cat([lab[:, :1], ab], dim=1)).clamp(0, 1)


def sources_fingerprint(sources: Sequence[VideoSource]) -> str:
    """A short stable hash of a video list (names a default colour-bin artefact per data set)."""
    h = hashlib.sha1()
    for s in sources:
        h.update(f"{s.kind}:{os.path.abspath(s.path)}\n".encode())
    return h.hexdigest()[:12]


def fit_colour_bins(
    sources: Sequence[VideoSource],
    *,
    n_bins: int = 16,
    n_frames: int = 10_000,
    pixels_per_frame: int = 100,
    size: Sequence[int] = (256, 256),
    seed: int = 0,
    progress: bool = True,
) -> tuple[np.ndarray, dict]:
    """Fit ``n_bins`` k-means centroids to the (a, b) colours of frames sampled from ``sources``.

    Samples up to ``n_frames`` distinct frames spread over the videos, resizes them like training
    clips, and takes ``pixels_per_frame`` random pixels from each. Returns (centroids (K, 2)
    float32, metadata).
    """
    from sklearn.cluster import KMeans

    rng = random.Random(seed)
    lengths = []
    for s in sources:
        try:
            lengths.append((s, num_frames(s)))
        except VideoReadError as e:
            log.warning("colour bins: skipping %s", e)
    lengths = [(s, n) for s, n in lengths if n > 0]
    if not lengths:
        raise ValueError("colour bins: no readable video among the sources")
    total = sum(n for _, n in lengths)
    picks: dict[int, list[int]] = {}
    if total <= n_frames:
        picks = {i: list(range(n)) for i, (_, n) in enumerate(lengths)}
    else:
        for flat in sorted(rng.sample(range(total), n_frames)):
            for i, (_, n) in enumerate(lengths):
                if flat < n:
                    picks.setdefault(i, []).append(flat)
                    break
                flat -= n
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for i, idx in tqdm(picks.items(), desc="colour bins: reading frames", disable=not progress):
        src = lengths[i][0]
        for chunk in range(0, len(idx), 64):
            try:
                frames = resize_frames(read_frames(src, idx[chunk : chunk + 64]), size)
            except VideoReadError as e:
                log.warning("colour bins: skipping %s", e)
                break
            ab = rgb_to_ab(frames).permute(0, 2, 3, 1).reshape(frames.shape[0], -1, 2)  # (t, HW, 2)
            sel = torch.randint(0, ab.shape[1], (ab.shape[0], pixels_per_frame), generator=gen)
            samples.append(torch.gather(ab, 1, sel[..., None].expand(-1, -1, 2)).reshape(-1, 2))
    points = torch.cat(samples).numpy().astype(np.float64)
    if len(points) < n_bins:
        raise ValueError(f"colour bins: only {len(points)} pixels sampled, fewer than {n_bins} bins")
    km = KMeans(n_clusters=n_bins, n_init=4, random_state=seed).fit(points)
    order = np.lexsort((km.cluster_centers_[:, 1], km.cluster_centers_[:, 0]))  # stable bin order
    centroids = km.cluster_centers_[order].astype(np.float32)
    n_used = sum(len(v) for v in picks.values())
    meta = {
        "format": ARTEFACT_FORMAT,
        "n_bins": n_bins,
        "colour_space": "CIE Lab (kornia), channels a, b",
        "frames": n_used,
        "pixels": int(len(points)),
        "videos": len(lengths),
        "frame_size": list(size),
        "sources_fingerprint": sources_fingerprint([s for s, _ in lengths]),
        "seed": seed,
        "inertia": float(km.inertia_),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return centroids, meta


def save_colour_bins(path: str | os.PathLike, centroids: np.ndarray, meta: dict) -> None:
    """Write the artefact atomically: ``centroids`` (K, 2) and ``meta`` (JSON) in one .npz."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, centroids=np.asarray(centroids, dtype=np.float32), meta=np.array(json.dumps(meta)))
    os.replace(tmp, path)


def load_colour_bins(path: str | os.PathLike, *, n_bins: int | None = None) -> tuple[np.ndarray, dict]:
    """Read a colour-bin artefact. Raises a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"colour-bin file not found: {path} (fit one with tools/fit_colour_bins.py)")
    try:
        with np.load(path, allow_pickle=False) as z:
            centroids = z["centroids"]
            meta = json.loads(str(z["meta"])) if "meta" in z else {}
    except Exception as e:  # noqa: BLE001 - any failure here means a malformed artefact
        raise ValueError(f"{path}: not a colour-bin file ({e})") from e
    if centroids.ndim != 2 or centroids.shape[1] != 2:
        raise ValueError(f"{path}: colour-bin centroids must have shape (K, 2), got {centroids.shape}")
    if n_bins is not None and centroids.shape[0] != n_bins:
        raise ValueError(f"{path}: has {centroids.shape[0]} colour bins, the model expects {n_bins}")
    if not np.isfinite(centroids).all():
        raise ValueError(f"{path}: colour-bin centroids contain NaN or inf")
    return centroids, meta


def import_colour_bins(
    src: str | os.PathLike, dst: str | os.PathLike, *, allow_pickle: bool = False
) -> tuple[np.ndarray, dict]:
    """Turn someone else's (K, 2) array of (a, b) centroids into a colour-bin artefact.

    For the released CorrFlow centroids (``centroids_16k_kinetics_10000samples.npy``, Lab a, b in
    the units of OpenCV's float Lab, which are kornia's too). A plain ``.npy`` (or ``.txt``) is read
    safely; a file written with ``ndarray.dump`` is a pickle, read only with ``allow_pickle=True``
    (a pickle can run code when loaded: allow it only for a file you trust).

    Returns:
        The centroids and the metadata written beside them to ``dst``.
    """
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"centroid file not found: {src}")
    if src.suffix == ".txt":
        centroids = np.loadtxt(src, dtype=np.float64, ndmin=2)
    else:
        try:
            centroids = np.load(src, allow_pickle=allow_pickle)
        except ValueError as e:
            if allow_pickle:
                raise ValueError(f"{src}: not a centroid array ({e})") from e
            raise ValueError(
                f"{src} is a pickle (e.g. written by ndarray.dump), not a plain .npy; loading a pickle can run "
                "code, so it needs allow_pickle=True (--allow-pickle) for a file you trust"
            ) from e
        except Exception as e:  # noqa: BLE001 - anything else: not an array file
            raise ValueError(f"{src}: not a centroid array ({e})") from e
    centroids = np.asarray(centroids, dtype=np.float64)
    if centroids.ndim != 2 or centroids.shape[1] != 2:
        raise ValueError(f"{src}: centroids must have shape (K, 2) (Lab a, b), got {centroids.shape}")
    if not np.isfinite(centroids).all():
        raise ValueError(f"{src}: centroids contain NaN or inf")
    meta = {
        "format": ARTEFACT_FORMAT,
        "n_bins": int(centroids.shape[0]),
        "colour_space": "CIE Lab, channels a, b (imported)",
        "imported_from": str(src.resolve()),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    save_colour_bins(dst, centroids.astype(np.float32), meta)
    return load_colour_bins(dst)

