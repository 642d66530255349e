"""``tools/flow.py``: the displacement field and confidence a feature extractor's local
correlation gives between consecutive frames of a video, with no further training."""

from corrflow.flow.pictures import confidence_picture, flow_picture
from corrflow.flow.run import flow, flow_video

__all__ = ["confidence_picture", "flow", "flow_picture", "flow_video"]
