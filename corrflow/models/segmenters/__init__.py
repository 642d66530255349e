"""Video object segmenters built on :class:`corrflow.models.backbone.SegmentationBackbone`."""

from corrflow.models.segmenters.checkpoint import load_segmenter, segmenter_payload
from corrflow.models.segmenters.functional import foreground_target, mask_boundaries, memory_read, soft_aggregate
from corrflow.models.segmenters.osvos import OSVOSNet, OSVOSOutput
from corrflow.models.segmenters.stm import QueryFeatures, STMInference, STMSegmenter

__all__ = [
    "OSVOSNet",
    "OSVOSOutput",
    "QueryFeatures",
    "STMInference",
    "STMSegmenter",
    "foreground_target",
    "load_segmenter",
    "mask_boundaries",
    "memory_read",
    "segmenter_payload",
    "soft_aggregate",
]
