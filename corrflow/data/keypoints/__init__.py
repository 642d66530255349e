"""Keypoint propagation data: JHMDB and DAVIS-layout videos with keypoints in JSON."""
