"""Restricted (local-window) attention: each target location attends to a (2M+1)x(2M+1) window
around the same location in one or more reference frames, with one joint softmax.

``local_correlation`` returns the window's logits themselves, (B, (2M+1)^2, H, W): the
correlation volume MotionSqueeze and ``tools/flow.py`` read displacements from.

``restricted_attention`` dispatches to a backend; every backend computes the same function.
"""

from corrflow.attention.correlation import local_correlation, window_offsets
from corrflow.attention.functional import available_backends, restricted_attention, window_validity

__all__ = ["restricted_attention", "available_backends", "window_validity", "local_correlation", "window_offsets"]
