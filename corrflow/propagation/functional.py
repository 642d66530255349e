"""Pure tensor functions of label propagation: the context schedule, the CRW mixed-context
affinity (a global first frame plus windowed recent frames, one joint top-k and softmax), and the
arg-max feed-back of the CorrFlow protocol.

The windowed-only case (CorrFlow's previous frame; CRW without a global first frame) is
:func:`corrflow.attention.restricted_attention`; :func:`mixed_context_attention` adds one frame
that every target location sees whole, with the top-k taken jointly over both parts.

Top-k in :func:`mixed_context_attention` keeps exactly k candidates per target (as CRW's
``torch.topk``; on exact ties at the k-th value, which ones is unspecified), while
``restricted_attention`` keeps every logit tied with the k-th. Without ties they agree.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.profiler import record_function

from corrflow.attention.functional import attention_in_float32
from corrflow.attention.tiled import key_region_view, tile_queries

__all__ = [
    "WINDOWS", "context_indices", "frame_regions", "mixed_context_attention", "mixed_context_attention_regions", "onehot_argmax",
    "region_bias", "region_keys", "window_mask", "window_reach",
]  # fmt: skip


def context_indices(t: int, *, n_recent: int, first: int = 0, global_first: bool = True) -> list[int]:
    """Frame indices that target frame ``t`` reads, in the order the propagator stacks them.

    The first frame (``first``) comes first when ``global_first``; then the ``n_recent`` frames
    before ``t``, oldest first, with indices before ``first`` replaced by ``first`` (the start of
    the video is padded with the first frame, as CRW's context bank does).

    >>> context_indices(3, n_recent=4)
    [0, 0, 0, 1, 2]
    """
    if t <= first:
        raise ValueError(f"target frame {t} must come after the first frame {first}")
    if n_recent < 0:
        raise ValueError(f"n_recent must be >= 0, got {n_recent}")
    recent = [max(first, i) for i in range(t - n_recent, t)]
    return ([first] if global_first else []) + recent


def onehot_argmax(labels: Tensor) -> Tensor:
    """Harden soft labels: one-hot of the arg-max over channels.

    Args:
        labels: (B, D, H, W) soft label maps.

    Returns:
        (B, D, H, W) of the same dtype, exactly one 1 per location (the first maximum on ties).
    """
    if labels.dim() != 4:
        raise ValueError(f"labels must be (B, D, H, W), got shape {tuple(labels.shape)}")
    idx = labels.argmax(dim=1)  # (B, H, W)
    return F.one_hot(idx, labels.shape[1]).permute(0, 3, 1, 2).to(labels.dtype)


WINDOWS = ("square", "disc")


def window_reach(radius: int, window: str = "square") -> int:
    """How far, in cells along an axis, a window of ``radius`` reaches.

    'square': every offset with max(|dy|, |dx|) <= radius (a (2M+1) x (2M+1) window, CorrFlow's).
    'disc': every offset with dy^2 + dx^2 < radius^2, strictly (CRW's ``MaskedAttention``), which
    reaches radius - 1 along an axis.
    """
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {WINDOWS}, got {window!r}")
    if window == "disc":
        if radius < 1:
            raise ValueError(f"a 'disc' window needs radius >= 1 (it holds the offsets closer than radius), got {radius}")
        return radius - 1
    return radius


@lru_cache(maxsize=256)
def window_mask(
    h: int, w: int, radius: int, tile: int, rows: range, device: torch.device | str = "cpu", window: str = "square"
) -> Tensor:
    """Which key of each tile's key region a query of that tile may attend to.

    The target frame is cut into ``tile`` x ``tile`` tiles (row-major, ``ceil(w / tile)`` a row);
    the key region of a tile is the tile grown by ``reach = window_reach(radius, window)`` on every
    side (side S = tile + 2 * reach). A key is allowed when it lies inside the (h, w) frame and in
    the query's window (see :func:`window_reach` for the two shapes).

    Args:
        rows: the tile rows to build (e.g. ``range(2, 4)``).

    Returns:
        (nTiles, T*T, S*S) bool for the ``len(rows) * ceil(w / tile)`` tiles of those rows (cached:
        treat it as read-only).
    """
    reach = window_reach(radius, window)
    s = tile + 2 * reach
    ntx = -(-w // tile)
    q = torch.arange(tile * tile, device=device)
    k = torch.arange(s * s, device=device)
    qy, qx = q // tile, q % tile  # query position inside its tile
    ky, kx = k // s - reach, k % s - reach  # key position relative to the tile origin
    dy, dx = qy[:, None] - ky[None], qx[:, None] - kx[None]  # (TT, SS) offsets
    if window == "disc":
        near = dy * dy + dx * dx < radius * radius
    else:
        near = (dy.abs() <= radius) & (dx.abs() <= radius)
    oy = torch.tensor(list(rows), device=device)[:, None] * tile  # (nRows, 1) tile origins
    ox = torch.arange(ntx, device=device)[None, :] * tile  # (1, nTx)
    gy = oy[..., None] + ky  # (nRows, 1, SS) absolute key rows
    gx = ox[..., None] + kx  # (1, nTx, SS)
    inside = (gy >= 0) & (gy < h) & (gx >= 0) & (gx < w)  # (nRows, nTx, SS)
    return (near[None, None] & inside[:, :, None, :]).reshape(-1, tile * tile, s * s)


@attention_in_float32
def mixed_context_attention(
    query: Tensor,
    first_key: Tensor,
    first_value: Tensor,
    keys: Tensor,
    values: Tensor,
    *,
    radius: int,
    temperature: float = 1.0,
    topk: int | None = None,
    tile: int = 8,
    max_logits: int = 1 << 25,
    window: str = "square",
) -> Tensor:
    """CRW-style propagation: a global first frame plus windowed recent frames, one joint softmax.

    For a target location p the candidates are every location of the first frame, and, in each
    recent frame r, the locations in p's window that lie inside the frame: within ``radius``
    (Chebyshev, ``window='square'``) or closer than ``radius`` (Euclidean, ``window='disc'``, as
    CRW's released test code masks).
    logit = <query[p], key> / temperature. With ``topk``, logits below the k-th largest over all
    candidates (both parts together) are dropped; exactly k are kept. The output is the softmax-weighted sum of the
    candidates' values.

    Args:
        query: (B, C, H, W) target features.
        first_key: (B, C, H0, W0) features of the frame seen whole (CRW's long-term memory), or
            (B, G, C, H0, W0): G frames seen whole (the first frame and the frames where later
            objects joined), all in the one softmax. Usually H0, W0 = H, W; any size works (every
            location is a candidate): the approximate ``first_stride`` attends a pooled frame.
        first_value: (B, D, H0, W0) its labels, or (B, G, D, H0, W0) theirs.
        keys: (B, R, C, H, W) features of R recent frames (R may be 0).
        values: (B, R, D, H, W) their labels.
        radius: M, the window half-size for recent frames, in feature cells.
        temperature: logits are divided by it (once).
        topk: keep the k largest logits per target (None: all).
        tile: tile side for the windowed part (memory vs. over-computation trade-off).
        max_logits: about how many logits one chunk of target tiles may hold; bounds memory.
        window: 'square' or 'disc', the shape of the recent frames' window (:func:`window_reach`).

    Returns:
        (B, D, H, W) propagated labels. Logits and softmax are float32 (float64 inputs: float64),
        also under autocast, by the rule of :func:`corrflow.attention.functional.attention_in_float32`;
        the result is float32 under autocast, else the inputs' promoted dtype.
    """
    b, c, h, w = query.shape
    if first_key.dim() == 5:  # G global frames: one long frame of G * H0 * W0 locations
        g, h0, w0 = first_key.shape[1], first_key.shape[3], first_key.shape[4]
        if first_key.shape[:3] != (b, g, c) or first_value.dim() != 5 or first_value.shape[:2] != (b, g) or first_value.shape[3:] != (h0, w0):
            raise ValueError(
                f"first_key must be ({b}, G, {c}, H0, W0) and first_value ({b}, G, D, H0, W0), "
                f"got {tuple(first_key.shape)} and {tuple(first_value.shape)}"
            )
        first_key = first_key.permute(0, 2, 3, 1, 4).reshape(b, c, h0, g * w0)
        first_value = first_value.permute(0, 2, 3, 1, 4).reshape(b, first_value.shape[2], h0, g * w0)
    d = first_value.shape[1]
    if first_key.dim() != 4 or first_key.shape[:2] != (b, c):
        raise ValueError(f"first_key {tuple(first_key.shape)} must be ({b}, {c}, H0, W0) for query {tuple(query.shape)}")
    if first_value.dim() != 4 or first_value.shape[0] != b or first_value.shape[2:] != first_key.shape[2:]:
        raise ValueError(f"first_value must be ({b}, D, {first_key.shape[2]}, {first_key.shape[3]}), got {tuple(first_value.shape)}")
    if keys.dim() != 5 or keys.shape[0] != b or keys.shape[2:] != (c, h, w):
        raise ValueError(f"keys must be ({b}, R, {c}, {h}, {w}), got {tuple(keys.shape)}")
    r = keys.shape[1]
    if values.shape != (b, r, d, h, w):
        raise ValueError(f"values must be ({b}, {r}, {d}, {h}, {w}), got {tuple(values.shape)}")
    if radius < 0 or tile < 1:
        raise ValueError(f"radius must be >= 0 and tile >= 1, got {radius}, {tile}")
    reach = window_reach(radius, window)
    if topk is not None and topk < 1:
        raise ValueError(f"topk must be >= 1 or None, got {topk}")

    tt, s = tile * tile, tile + 2 * reach
    ss = s * s
    nty, ntx = -(-h // tile), -(-w // tile)
    q_tiles = tile_queries(query, tile)  # (B, nTy, nTx, TT, C)
    k0 = first_key.flatten(2)  # (B, C, HW)
    v0 = first_value.flatten(2).transpose(1, 2)  # (B, HW, D)
    if r:
        k_reg = key_region_view(keys.reshape(b * r, c, h, w), reach, tile)  # (B*R, C, nTy, nTx, S, S) view
        v_reg = key_region_view(values.reshape(b * r, d, h, w), reach, tile)
    per_row = ntx * tt * (first_key.shape[2] * first_key.shape[3] + r * ss)  # logits of one tile row
    rows_per_chunk = max(1, max_logits // max(per_row, 1))
    out_rows = []
    for y0 in range(0, nty, rows_per_chunk):
        rows = range(y0, min(nty, y0 + rows_per_chunk))
        n = len(rows) * ntx
        q = q_tiles[:, rows.start : rows.stop].reshape(b, n * tt, c) / temperature  # (B, nQ, C)
        parts = [torch.bmm(q, k0)]  # (B, nQ, HW) global logits
        if r:
            kc = k_reg[:, :, rows.start : rows.stop].reshape(b, r, c, n, ss).permute(0, 3, 1, 4, 2)
            kc = kc.reshape(b, n, r * ss, c)  # (B, n, R*SS, C)
            ll = torch.matmul(q.view(b, n, tt, c), kc.transpose(-1, -2))  # (B, n, TT, R*SS)
            allowed = window_mask(h, w, radius, tile, rows, str(query.device), window)  # (n, TT, SS)
            bias = torch.zeros(allowed.shape, dtype=ll.dtype, device=ll.device).masked_fill_(~allowed, float("-inf"))
            ll.view(b, n, tt, r, ss).add_(bias[:, :, None, :])  # out-of-window and out-of-frame keys -> -inf
            parts.append(ll.view(b, n * tt, r * ss))
        vc = None
        if r:
            vc = v_reg[:, :, rows.start : rows.stop].reshape(b, r, d, n, ss).permute(0, 3, 1, 4, 2)
            vc = vc.reshape(b, n, r * ss, d)  # (B, n, R*SS, D)
        if topk is not None and topk < sum(p.shape[-1] for p in parts):
            res = _topk_combine(parts, v0, vc, topk=topk, tile_queries=tt)
        else:
            res = _softmax_combine(parts, v0, vc, tile_queries=tt)
        out_rows.append(res.view(b, len(rows), ntx, tt, d))
    return _untile(torch.cat(out_rows, dim=1), h, w, tile)


def _global_candidates(logits: Tensor, v0: Tensor, topk: int) -> tuple[Tensor, Tensor]:
    """The ``topk`` best of (B, nQ, HW) logits over frames every query sees whole, and their labels
    from (B, HW, D) ``v0``: (B, nQ, k) and (B, nQ, k, D)."""
    b, nq, hw = logits.shape
    d = v0.shape[-1]
    gv, gi = logits.topk(min(topk, hw), dim=-1)
    return gv, torch.gather(v0[:, None].expand(b, nq, hw, d), 2, gi[..., None].expand(*gi.shape, d))


def _tile_candidates(logits: Tensor, v_tiles: Tensor, topk: int) -> tuple[Tensor, Tensor]:
    """The ``topk`` best of (B, n, TT, K) logits of each tile's queries over that tile's K keys, and
    their labels from (B, n, K, D) ``v_tiles``: (B, n * TT, k) and (B, n * TT, k, D)."""
    b, n, tt, k = logits.shape
    d = v_tiles.shape[-1]
    lv, li = logits.topk(min(topk, k), dim=-1)  # (B, n, TT, k1)
    li = li.reshape(b, n, tt * li.shape[-1])
    lval = torch.gather(v_tiles, 2, li[..., None].expand(*li.shape, d))  # (B, n, TT*k1, D)
    return lv.reshape(b, n * tt, -1), lval.view(b, n * tt, -1, d)


def _merge_candidates(cand: list[Tensor], vals: list[Tensor], topk: int) -> Tensor:
    """Exactly the ``topk`` best of all candidates ((B, nQ, k_i) logits, (B, nQ, k_i, D) labels),
    softmax-weighted: (B, nQ, D)."""
    cand_v, vals_t = torch.cat(cand, dim=-1), torch.cat(vals, dim=2)
    sel_v, sel_i = cand_v.topk(topk, dim=-1)
    w = torch.softmax(sel_v, dim=-1)  # (B, nQ, k)
    sel = torch.gather(vals_t, 2, sel_i[..., None].expand(*sel_i.shape, vals_t.shape[-1]))  # (B, nQ, k, D)
    return (w[..., None] * sel).sum(2)


def _untile(out: Tensor, h: int, w: int, tile: int) -> Tensor:
    """(B, nTy, nTx, TT, D) per-tile results -> (B, D, H, W)."""
    b, nty, ntx, _, d = out.shape
    out = out.view(b, nty, ntx, tile, tile, d).permute(0, 5, 1, 3, 2, 4).reshape(b, d, nty * tile, ntx * tile)
    return out[:, :, :h, :w]


def _topk_combine(parts: list[Tensor], v0: Tensor, v_reg: Tensor | None, *, topk: int, tile_queries: int) -> Tensor:
    """Exactly the ``topk`` best candidates of the union, softmax-weighted.

    The k best of the union are among the k best of each part, so only those are gathered.

    Args:
        parts: [(B, nQ, HW) global logits, optionally (B, nQ, R*SS) masked local logits].
        v0: (B, HW, D) global values.
        v_reg: (B, n, R*SS, D) local values of the chunk's n tiles (nQ = n * tile_queries), or None.

    Returns:
        (B, nQ, D).
    """
    gv, gval = _global_candidates(parts[0], v0, topk)
    cand, vals = [gv], [gval]
    if v_reg is not None:
        b, n = v_reg.shape[:2]
        lv, lval = _tile_candidates(parts[1].view(b, n, tile_queries, -1), v_reg, topk)
        cand.append(lv)
        vals.append(lval)
    return _merge_candidates(cand, vals, topk)


def _softmax_combine(parts: list[Tensor], v0: Tensor, v_reg: Tensor | None, *, tile_queries: int) -> Tensor:
    """Softmax over every candidate of both parts (no top-k): (B, nQ, D)."""
    b, nq, _ = parts[0].shape
    m = torch.stack([p.amax(dim=-1) for p in parts], dim=-1).amax(dim=-1, keepdim=True)  # (B, nQ, 1)
    e0 = torch.exp(parts[0] - m)
    num = torch.bmm(e0, v0)  # (B, nQ, D)
    den = e0.sum(-1, keepdim=True)
    if v_reg is not None:
        el = torch.exp(parts[1] - m).view(b, v_reg.shape[1], tile_queries, -1)
        num = num + torch.matmul(el, v_reg).view(b, nq, -1)
        den = den + el.sum(-1).view(b, nq, 1)
    return num / den


@lru_cache(maxsize=64)
def region_keys(radius: int, tile: int, window: str = "square") -> Tensor:
    """(U,) indices into a tile's (S*S) key region, S = tile + 2 * reach: the keys some query of the
    tile may attend to (the union of its queries' windows; for 'disc' the region's corners drop out:
    U = 808 of 900 for CRW's radius 12 and tile 8). Cached: treat it as read-only."""
    reach = window_reach(radius, window)
    s = tile + 2 * reach
    q, k = torch.arange(tile * tile), torch.arange(s * s)
    dy = (q // tile)[:, None] - (k // s - reach)[None]
    dx = (q % tile)[:, None] - (k % s - reach)[None]
    near = dy * dy + dx * dx < radius * radius if window == "disc" else (dy.abs() <= radius) & (dx.abs() <= radius)
    return near.any(0).nonzero().flatten()


@lru_cache(maxsize=32)
def region_bias(h: int, w: int, radius: int, tile: int, window: str = "square", device: str = "cpu") -> Tensor:
    """(nTiles, T*T, U) float32: 0 where a query of the tile may attend to the key of its region
    (:func:`region_keys` order), -inf where the key lies outside the query's window or the (h, w)
    frame. Added to the logits of every recent frame alike. Cached: treat it as read-only."""
    allowed = window_mask(h, w, radius, tile, range(-(-h // tile)), device, window)  # (nTiles, TT, SS)
    allowed = allowed[:, :, region_keys(radius, tile, window).to(allowed.device)]
    return torch.zeros(allowed.shape, device=allowed.device).masked_fill_(~allowed, float("-inf"))


@lru_cache(maxsize=32)
def _region_index(h: int, w: int, radius: int, tile: int, window: str, device: str) -> Tensor:
    """(nTiles * U,) positions in the padded frame (rows of ``h + 2 * reach`` rounded up to the tiles,
    flattened) of each tile's :func:`region_keys`, tile after tile."""
    reach = window_reach(radius, window)
    s = tile + 2 * reach
    nty, ntx = -(-h // tile), -(-w // tile)
    wp = ntx * tile + 2 * reach  # the padded width
    keep = region_keys(radius, tile, window)
    ky, kx = keep // s, keep % s  # in the tile's region, whose corner is the tile origin in padded coordinates
    oy = torch.arange(nty)[:, None, None] * tile
    ox = torch.arange(ntx)[None, :, None] * tile
    return ((oy + ky) * wp + ox + kx).reshape(-1).to(device)


def frame_regions(x: Tensor, radius: int, tile: int, window: str = "square") -> Tensor:
    """(B, C, H, W) -> (B, nTiles, U, C), contiguous: each tile's key region (the tile grown by
    ``window_reach(radius, window)`` on every side, zero outside the frame), only the :func:`region_keys`
    that some query of the tile may see. Laid out once, when a frame enters the CRW context, so that
    every later query frame reads it with a plain batched matrix multiply (a frame stays 20 frames).
    One gather from the zero-padded frame laid out channels-last."""
    b, c, h, w = x.shape
    reach = window_reach(radius, window)
    nty, ntx = -(-h // tile), -(-w // tile)
    xp = F.pad(x, (reach, reach + ntx * tile - w, reach, reach + nty * tile - h))  # (B, C, Hp, Wp)
    flat = xp.flatten(2).transpose(1, 2).contiguous()  # (B, Hp*Wp, C): a copy the size of the features
    idx = _region_index(h, w, radius, tile, window, str(x.device))
    return flat[:, idx].view(b, nty * ntx, -1, c)


@attention_in_float32
def mixed_context_attention_regions(
    query: Tensor,
    first_key: Tensor,
    first_value: Tensor,
    key_regions: Tensor,
    value_regions: Tensor,
    *,
    radius: int,
    temperature: float,
    topk: int,
    tile: int = 8,
    window: str = "square",
    max_logits: int = 1 << 24,
) -> Tensor:
    """:func:`mixed_context_attention` with a top-k, reading the recent frames' key regions as laid
    out once by :func:`frame_regions` instead of cutting them out of every frame again.

    The candidates, the logits and the kept ``topk`` are those of :func:`mixed_context_attention`.
    For each chunk of tiles it takes one batched matrix multiply of the tiles' queries against the
    R recent frames' regions side by side (R * U keys a tile), one -inf bias for the window and the
    frame's edge, one top-k over them, and merges those k with the global part's k best: no logit
    beyond what the tile's windows need (the region's corners outside every window are not laid
    out), no copy of the regions per query frame.

    Args:
        query: (B, C, H, W) target features.
        first_key, first_value: (B, C, H0, W') and (B, D, H0, W') of the frames seen whole, side by
            side along the width (W' = G * W0; :func:`mixed_context_attention` lays G frames out so;
            usually H0, W0 = H, W, any size works).
        key_regions, value_regions: (B, nTiles, R, U, C) and (B, nTiles, R, U, D): the R recent
            frames' :func:`frame_regions` (with the same ``radius``, ``tile`` and ``window``) side
            by side; a frame may fill several slots (the padded start), counted as often as it does.
            The order of the R slots does not matter.
        radius, window, tile: as :func:`mixed_context_attention`; ``tile`` must be the regions'.
        topk: the candidates kept per target (required: without a top-k use :func:`mixed_context_attention`).
        max_logits: about how many logits one chunk of tiles may hold; bounds memory.

    Returns:
        (B, D, H, W) propagated labels.
    """
    b, c, h, w = query.shape
    d = first_value.shape[1]
    if first_key.dim() != 4 or first_key.shape[:2] != (b, c) or first_value.shape[0] != b or first_value.shape[2:] != first_key.shape[2:]:
        raise ValueError(f"first_key {tuple(first_key.shape)} / first_value {tuple(first_value.shape)} do not match query {tuple(query.shape)}")
    if topk is None or topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    nty, ntx = -(-h // tile), -(-w // tile)
    nt, tt, u = nty * ntx, tile * tile, len(region_keys(radius, tile, window))
    r = key_regions.shape[2] if key_regions.dim() == 5 else -1
    if key_regions.shape != (b, nt, r, u, c) or value_regions.shape != (b, nt, r, u, d):
        raise ValueError(
            f"regions must be ({b}, {nt}, R, {u}, {c}) and ({b}, {nt}, R, {u}, {d}) for tile {tile}, radius {radius} and "
            f"window {window!r}, got {tuple(key_regions.shape)} and {tuple(value_regions.shape)}"
        )
    q_tiles = tile_queries(query, tile).reshape(b, nt, tt, c)
    k0 = first_key.flatten(2)  # (B, C, HW')
    v0 = first_value.flatten(2).transpose(1, 2)  # (B, HW', D)
    bias = region_bias(h, w, radius, tile, window, str(query.device)).to(q_tiles.dtype) if r else None  # (nT, TT, U)
    per_tile = tt * (k0.shape[-1] + r * u)
    tiles_per_chunk = max(1, max_logits // max(per_tile, 1))
    out = []
    for t0 in range(0, nt, tiles_per_chunk):
        t1 = min(nt, t0 + tiles_per_chunk)
        n = t1 - t0
        q = q_tiles[:, t0:t1] / temperature  # (B, n, TT, C)
        with record_function("propagate.global_affinity"):
            g = torch.bmm(q.reshape(b, n * tt, c), k0)  # (B, n*TT, HW') logits
        with record_function("propagate.global_topk"):
            gv, gval = _global_candidates(g, v0, topk)
        del g
        cand, vals = [gv], [gval]
        if r:
            with record_function("propagate.local_affinity"):
                ll = torch.matmul(q, key_regions[:, t0:t1].reshape(b, n, r * u, c).transpose(-1, -2))  # (B, n, TT, R*U)
                ll.view(b, n, tt, r, u).add_(bias[t0:t1, :, None, :])  # out-of-window and out-of-frame keys -> -inf
            with record_function("propagate.local_topk"):
                lv, lval = _tile_candidates(ll, value_regions[:, t0:t1].reshape(b, n, r * u, d), topk)
            del ll
            cand.append(lv)
            vals.append(lval)
        with record_function("propagate.merge"):
            out.append(_merge_candidates(cand, vals, topk).view(b, n, tt, d))
    return _untile(torch.cat(out, dim=1).view(b, nty, ntx, tt, d), h, w, tile)
