"""Dispatch for restricted attention, and the shape contract every backend honours.

Semantics (all backends): for a target location (y, x), the candidates are every reference frame
r and every offset (dy, dx) with |dy|, |dx| <= radius such that (y + dy, x + dx) lies inside the
frame. Positions outside the frame are excluded from the softmax (never zero-padded into it).
logit = <query[:, :, y, x], keys[:, r, :, y + dy, x + dx]> / temperature. With ``topk``, only the
k largest logits across all references and offsets are kept. One softmax runs jointly over all
kept candidates, and the output is the softmax-weighted sum of the candidates' values.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
from torch import Tensor

# name -> "module:function"; imported lazily so optional back-ends never fail at import time.
_BACKENDS: dict[str, str] = {
    "reference": "corrflow.attention.reference:restricted_attention_reference",
    "unfold": "corrflow.attention.unfold:restricted_attention_unfold",
    "tiled": "corrflow.attention.tiled:restricted_attention_tiled",
    "flex": "corrflow.attention.flex:restricted_attention_flex",
    "triton": "corrflow.attention.triton_kernel:restricted_attention_triton",
}


def _resolve(name: str) -> Callable[..., Tensor]:
    if name not in _BACKENDS:
        raise ValueError(f"unknown restricted-attention backend {name!r}; choose from {sorted(_BACKENDS)} or 'auto'")
    module, fn = _BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), fn)


def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Backends that can run on ``device`` here (the float64 dense reference is always listed).

    'triton' is listed on CUDA when triton imports (on the CPU it runs only under Triton's
    interpreter, TRITON_INTERPRET=1, which is for tests, so it is not listed there).
    """
    device = torch.device(device)
    names = ["reference", "unfold", "tiled"]
    if device.type == "cuda":
        names.append("flex")
        if _triton_importable():
            names.append("triton")
    return names


def auto_backend(device: torch.device, *, topk: int | None = None) -> str:
    """The backend ``backend='auto'`` picks.

    CUDA: FlexAttention (without top-k) or the tiled backend (with top-k). The fused Triton
    kernel is selected with ``backend='triton'``; it becomes the CUDA default once its GPU tests
    and benchmark have run on a GPU (so far it is verified under Triton's CPU interpreter only).
    Elsewhere: the tiled backend.
    """
    if device.type != "cuda":
        return "tiled"
    return "flex" if topk is None else "tiled"


def check_shapes(query: Tensor, keys: Tensor, values: Tensor, radius: int) -> None:
    if query.dim() != 4:
        raise ValueError(f"query must be (B, C, H, W), got shape {tuple(query.shape)}")
    if keys.dim() != 5 or values.dim() != 5:
        raise ValueError(
            f"keys and values must be (B, R, C, H, W) and (B, R, D, H, W), got {tuple(keys.shape)} and {tuple(values.shape)}"
        )
    b, c, h, w = query.shape
    if keys.shape[0] != b or keys.shape[2] != c or keys.shape[3:] != (h, w):
        raise ValueError(f"keys {tuple(keys.shape)} do not match query {tuple(query.shape)} (expected ({b}, R, {c}, {h}, {w}))")
    if values.shape[:2] != keys.shape[:2] or values.shape[3:] != (h, w):
        raise ValueError(f"values {tuple(values.shape)} do not match keys {tuple(keys.shape)} (expected ({b}, {keys.shape[1]}, D, {h}, {w}))")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")


def restricted_attention(
    query: Tensor,
    keys: Tensor,
    values: Tensor,
    *,
    radius: int,
    temperature: float = 1.0,
    topk: int | None = None,
    backend: str = "auto",
) -> Tensor:
    """Restricted attention of targets over reference frames.

    Args:
        query: (B, C, H, W) target features.
        keys: (B, R, C, H, W) features of R reference frames.
        values: (B, R, D, H, W) what each reference position carries (colour bins, labels...).
        radius: M; the window is (2M+1) x (2M+1).
        temperature: logits are divided by it.
        topk: keep only the k largest logits over all references and offsets (None: all).
        backend: 'auto', or one of ``available_backends()``.

    Returns:
        (B, D, H, W) attention-weighted values.
    """
    check_shapes(query, keys, values, radius)
    name = auto_backend(query.device, topk=topk) if backend == "auto" else backend
    return _resolve(name)(query, keys, values, radius=radius, temperature=temperature, topk=topk)


def window_validity(h: int, w: int, radius: int, device: torch.device | str = "cpu") -> Tensor:
    """Which window offsets land inside an (h, w) frame.

    Returns:
        (K, H*W) bool, K = (2M+1)^2 offsets in row-major (dy, dx) order, dy, dx in [-M, M].
    """
    ys = torch.arange(h, device=device)
    xs = torch.arange(w, device=device)
    d = torch.arange(-radius, radius + 1, device=device)
    vy = ((ys[None, :] + d[:, None]) >= 0) & ((ys[None, :] + d[:, None]) < h)  # (2M+1, H)
    vx = ((xs[None, :] + d[:, None]) >= 0) & ((xs[None, :] + d[:, None]) < w)  # (2M+1, W)
    valid = vy[:, None, :, None] & vx[None, :, None, :]  # (dy, dx, H, W)
    return valid.reshape((2 * radius + 1) ** 2, h * w)
