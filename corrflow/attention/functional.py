"""Dispatch for restricted attention, and the shape contract every backend honours.

Semantics (all backends): for a target location (y, x), the candidates are every reference frame
r and every offset (dy, dx) with |dy|, |dx| <= radius such that (y + dy, x + dx) lies inside the
frame. Positions outside the frame are excluded from the softmax (never zero-padded into it).
logit = <query[:, :, y, x], keys[:, r, :, y + dy, x + dx]> / temperature. With ``topk``, only the
k largest logits across all references and offsets are kept. One softmax runs jointly over all
kept candidates, and the output is the softmax-weighted sum of the candidates' values.

Precision (all backends, one rule: :func:`attention_in_float32`, which the dispatcher applies):
logits and the softmax are computed in float32 (float64 inputs stay float64), with autocast
disabled for the op and 16-bit inputs upcast. CorrFlow takes raw dot products of 64-d features at
temperature 1, so its logits reach the hundreds, where bfloat16 is only accurate to whole units.
Under autocast the output is float32; without autocast it has the inputs' promoted dtype.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable, Collection

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

# name -> "module:function"; imported lazily so optional back-ends never fail at import time.
_BACKENDS: dict[str, str] = {
    "reference": "corrflow.attention.reference:restricted_attention_reference",
    "unfold": "corrflow.attention.unfold:restricted_attention_unfold",
    "tiled": "corrflow.attention.tiled:restricted_attention_tiled",
    "flex": "corrflow.attention.flex:restricted_attention_flex",
    "triton": "corrflow.attention.triton_kernel:restricted_attention_triton",
}


_LOW_PRECISION = (torch.float16, torch.bfloat16)
_auto_choices_logged: set[tuple[str, str]] = set()


def attention_in_float32(fn: Callable[..., Tensor], *, keep_16bit: Collection[int] = ()) -> Callable[..., Tensor]:
    """Wrap an attention op so that its logits and softmax are computed in float32.

    The rule every attention op here follows (the dispatcher wraps each backend with it, and
    :func:`corrflow.propagation.functional.mixed_context_attention` is decorated with it): if
    autocast is enabled for the inputs' device, it is disabled for the op; every float16 /
    bfloat16 tensor argument is upcast to float32 (a differentiable cast: gradients flow back in
    the argument's own dtype). The result is float32 under autocast (at least float32: float64
    stays float64), and otherwise cast to the promoted dtype of the tensor arguments, so a caller
    that passes bfloat16 without autocast gets bfloat16 back.

    Args:
        fn: ``fn(*tensors, **options) -> Tensor``.
        keep_16bit: positions of arguments passed on in 16 bits all the same: for a kernel that
            computes float32 logits from 16-bit operands itself (exact products, float32 sums),
            where the upcast would only double the bytes it reads. They are kept only when they
            all have one 16-bit dtype (else every argument is upcast).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
        device_type = tensors[0].device.type
        autocast = torch.is_autocast_enabled(device_type)
        if not autocast and not any(t.dtype in _LOW_PRECISION for t in tensors):
            return fn(*args, **kwargs)
        promoted = functools.reduce(torch.promote_types, (t.dtype for t in tensors))
        out_dtype = torch.promote_types(promoted, torch.float32) if autocast else promoted

        kept = {args[i].dtype for i in keep_16bit if i < len(args) and isinstance(args[i], Tensor)}
        keep = keep_16bit if len(kept) == 1 and kept <= set(_LOW_PRECISION) else ()  # one 16-bit dtype, or upcast all

        def up(i, a):
            low = isinstance(a, Tensor) and a.dtype in _LOW_PRECISION
            return a.float() if low and i not in keep else a

        args = tuple(up(i, a) for i, a in enumerate(args))
        kwargs = {k: up(k, a) for k, a in kwargs.items()}
        if autocast:
            with torch.autocast(device_type, enabled=False):
                out = fn(*args, **kwargs)
        else:
            out = fn(*args, **kwargs)
        return out.to(out_dtype)

    return wrapper


@functools.lru_cache(maxsize=None)
def _resolve(name: str) -> Callable[..., Tensor]:
    """The backend ``name``, wrapped in :func:`attention_in_float32`.

    A backend function may carry ``fp32_logits_from_16bit_args``, the argument positions it
    takes in 16 bits (see ``keep_16bit``).
    """
    if name not in _BACKENDS:
        raise ValueError(f"unknown restricted-attention backend {name!r}; choose from {sorted(_BACKENDS)} or 'auto'")
    module, fn = _BACKENDS[name].split(":")
    fn = getattr(importlib.import_module(module), fn)
    return attention_in_float32(fn, keep_16bit=getattr(fn, "fp32_logits_from_16bit_args", ()))


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
        (B, D, H, W) attention-weighted values: float32 under autocast, else the inputs' promoted
        dtype (logits and softmax are float32 or float64 either way; see the module docstring).
    """
    check_shapes(query, keys, values, radius)
    if backend == "auto":
        name = auto_backend(query.device, topk=topk)
        if (query.device.type, name) not in _auto_choices_logged:
            _auto_choices_logged.add((query.device.type, name))
            logger.info("restricted attention: backend='auto' runs %r on %s%s", name, query.device.type,
                        " (top-k)" if topk is not None else "")  # fmt: skip
    else:
        name = backend
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
