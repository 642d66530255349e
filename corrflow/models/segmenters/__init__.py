"""Video object segmenters built on :class:`corrflow.models.backbone.SegmentationBackbone`."""

from corrflow.models.segmenters.checkpoint import load_segmenter, segmenter_payload
from corrflow.models.segmenters.functional import memory_read, soft_aggregate
from corrflow.models.segmenters.stm import QueryFeatures, STMInference, STMSegmenter

__all__ = ["QueryFeatures", "STMInference", "STMSegmenter", "load_segmenter", "memory_read", "segmenter_payload", "soft_aggregate"]
