"""Evaluation metrics: DAVIS J / F (official semantics) and keypoint PCK (JHMDB protocol)."""

from corrflow.metrics.davis import (
    DAVISScores,
    ObjectScores,
    boundary_f_measure,
    boundary_radius,
    davis_object_ids,
    disk,
    jaccard,
    score_davis_sequence,
    seg_to_boundary,
    temporal_statistics,
)
from corrflow.metrics.pck import (
    normalized_keypoint_distances,
    pck,
    pck_from_distances,
    pck_per_keypoint,
)

__all__ = [
    "DAVISScores",
    "ObjectScores",
    "boundary_f_measure",
    "boundary_radius",
    "davis_object_ids",
    "disk",
    "jaccard",
    "normalized_keypoint_distances",
    "pck",
    "pck_from_distances",
    "pck_per_keypoint",
    "score_davis_sequence",
    "seg_to_boundary",
    "temporal_statistics",
]
