"""Feature extractors for label propagation: each maps (B, 3, H, W) RGB in [0, 1] to
(B, C, H / stride, W / stride) and has a ``stride`` attribute (H, W multiples of it)."""

from corrflow.features.encoder import checkpoint_features, random_features
from corrflow.features.imagenet import EfficientNetLiteFeatures
from corrflow.features.lab import LabFeatures

__all__ = ["EfficientNetLiteFeatures", "LabFeatures", "checkpoint_features", "random_features"]
