"""Keyframes: which given frames a video is propagated from, and how the two directions are fused.

With keyframes ``k_0 < k_1 < ... < k_m`` (each a frame whose mask is given), a frame ``t``
between two of them, ``k_i < t < k_{i+1}``, is predicted twice: forward from ``k_i`` (the
propagator restarted there) and backward from ``k_{i+1}`` (the same propagator on the frames
in reverse order, restarted at ``k_{i+1}``). The two soft predictions are fused,
``P(t) = w_f P_forward(t) + w_b P_backward(t)``, ``w_f + w_b = 1``, with weights that fall with
the temporal distance to each keyframe (:func:`fusion_weights`):

* ``linear``: ``w_f = (k_{i+1} - t) / (k_{i+1} - k_i)``, ``w_b = (t - k_i) / (k_{i+1} - k_i)``;
  each keyframe counts fully at itself and half-way between the two each counts one half.
* ``nearest``: the nearer keyframe's prediction alone (1 / 0); half-way, one half each.

Frames before ``k_0`` are propagated backward from ``k_0`` only; frames after ``k_m`` forward
from ``k_m`` only. The given keyframes are written as given and left out of the score.

Keyframes are given as a list of frame indices, or as one of (``N`` a positive integer):

* ``all_given``: every frame that has an annotation file;
* ``every_N``: frames 0, N, 2N, ... (e.g. ``every_20``);
* ``count_N``: N frames evenly spread over the video, ``round(linspace(0, T - 1, N))`` (``count_1``
  is the first frame alone, DAVIS's own protocol).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import numpy as np

__all__ = ["FUSIONS", "fusion_weights", "resolve_keyframes", "segments"]

FUSIONS = ("linear", "nearest")
_SPEC = re.compile(r"^(every|count)_(\d+)$")


def fusion_weights(t: int, earlier: int, later: int, *, mode: str = "linear") -> tuple[float, float]:
    """(w_forward, w_backward) for frame ``t`` between keyframes ``earlier <= t <= later``.

    >>> fusion_weights(5, 0, 10)
    (0.5, 0.5)
    >>> fusion_weights(2, 0, 10, mode="nearest")
    (1.0, 0.0)
    """
    if mode not in FUSIONS:
        raise ValueError(f"keyframe fusion must be one of {FUSIONS}, got {mode!r}")
    if not earlier <= t <= later or earlier == later:
        raise ValueError(f"frame {t} must lie between two distinct keyframes {earlier} and {later}")
    wb = (t - earlier) / (later - earlier)
    if mode == "nearest":
        wb = 0.5 if wb == 0.5 else float(wb > 0.5)
    return 1.0 - wb, wb


def resolve_keyframes(spec, n_frames: int, *, given: Sequence[int] = (), where: str = "") -> list[int]:
    """The sorted keyframe indices of a video of ``n_frames`` frames.

    Args:
        spec: a list of frame indices, 'all_given', 'every_N' or 'count_N' (see the module docstring).
        n_frames: the video's length.
        given: indices of the frames that have an annotation (for 'all_given').
        where: what to name in errors (the video's frame folder).

    Raises:
        ValueError: an index past the video's end or negative, an unknown spec, or no keyframe.
    """
    at = f"{where}: " if where else ""
    if isinstance(spec, str):
        m = _SPEC.match(spec)
        if spec == "all_given":
            keys = list(given)
        elif m and int(m.group(2)) > 0:
            n = int(m.group(2))
            keys = list(range(0, n_frames, n)) if m.group(1) == "every" else np.round(np.linspace(0, n_frames - 1, min(n, n_frames))).astype(int).tolist()
        else:
            raise ValueError(f"keyframes={spec!r}: give a list of frame indices, 'all_given', 'every_N' or 'count_N' (N >= 1)")
    else:
        try:
            keys = [int(k) for k in spec]
        except (TypeError, ValueError) as e:
            raise ValueError(f"keyframes={spec!r}: give a list of frame indices, 'all_given', 'every_N' or 'count_N'") from e
    bad = [k for k in keys if not 0 <= k < n_frames]
    if bad:
        raise ValueError(f"{at}keyframe {bad[0]} lies past the video's end (it has {n_frames} frames, indices 0..{n_frames - 1})")
    keys = sorted(set(keys))
    if not keys:
        raise ValueError(f"{at}keyframes={spec!r} gives no keyframe (no annotation file?)")
    return keys


def segments(keyframes: Sequence[int], n_frames: int) -> Iterator[tuple[int | None, int | None, range]]:
    """The spans between keyframes, in frame order: ``(earlier, later, frames)`` with the frames
    strictly between them; ``earlier`` is None before the first keyframe, ``later`` None after the last.

    >>> [(a, b, list(r)) for a, b, r in segments([2, 5], 7)]
    [(None, 2, [0, 1]), (2, 5, [3, 4]), (5, None, [6])]
    """
    keys = list(keyframes)
    spans = [(None, keys[0], range(0, keys[0]))]
    spans += [(a, b, range(a + 1, b)) for a, b in zip(keys, keys[1:], strict=False)]
    spans.append((keys[-1], None, range(keys[-1] + 1, n_frames)))
    for a, b, r in spans:
        if len(r):
            yield a, b, r
