"""Restricted (local-window) attention: each target location attends to a (2M+1)x(2M+1) window
around the same location in one or more reference frames, with one joint softmax.

``restricted_attention`` dispatches to a backend; every backend computes the same function.
"""

from corrflow.attention.functional import available_backends, restricted_attention, window_validity

__all__ = ["restricted_attention", "available_backends", "window_validity"]
