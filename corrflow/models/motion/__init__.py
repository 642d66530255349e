"""Motion models: displacements from local correlation, MotionSqueeze, TSM's temporal shift and
the video classifier (MSNet) built on :class:`corrflow.models.backbone.SegmentationBackbone`."""
