"""corrflow: self-supervised dense video correspondence by colourisation, and its uses.

The Python API, for a notebook (the tools in ``tools/`` run the same code on data sets):

- :func:`propagate` ``(frames, first_mask, features=..., protocol=...)``: one video's first-frame
  masks propagated to every frame, returned as (T, H, W) object ids;
- :func:`load_encoder` ``(ckpt_or_name)``: the features, a ``tools/train.py`` checkpoint's trained
  encoder or a baseline (``'lab'``, ``'random'``, ``'imagenet'``).

``import corrflow`` is cheap: torch and the rest are imported when a function is called.
"""

from corrflow.api import load_encoder, propagate

__all__ = ["__version__", "load_encoder", "propagate"]
__version__ = "0.1.0"
