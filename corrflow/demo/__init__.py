"""The demo page: load a video, mark objects, propagate them, look at the result.

``pip install -e ".[demo]"`` then ``python tools/demo.py``. The page (:mod:`corrflow.demo.app`,
Gradio, imported lazily) is a thin layout over testable functions: :mod:`corrflow.data.vos.clip`
(a video file, frame folder or sample clip, capped and resized, as an in-memory video),
:mod:`corrflow.demo.masks` (painted layers or palette PNGs -> id maps) and
:mod:`corrflow.demo.session` (the propagation run of ``tools/propagate.py`` on that one video,
with a progress callback, cancelling and the zip of palette PNGs).
"""
