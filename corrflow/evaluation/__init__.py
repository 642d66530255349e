"""Scoring of written results: DAVIS masks (official J&F) and propagated keypoints (PCK)."""

from corrflow.evaluation.davis import (
    DAVISScores,
    evaluate_davis,
    format_davis_tables,
    read_davis_split,
    write_davis_csvs,
)
from corrflow.evaluation.keypoints import KeypointScores, evaluate_keypoints, load_predicted_keypoints

__all__ = [
    "DAVISScores",
    "KeypointScores",
    "evaluate_davis",
    "evaluate_keypoints",
    "format_davis_tables",
    "load_predicted_keypoints",
    "read_davis_split",
    "write_davis_csvs",
]
