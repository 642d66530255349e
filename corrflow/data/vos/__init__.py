"""Video object segmentation data: DAVIS and YouTube-VOS for propagation, annotated frames,
clips and datamodules for training segmenters (STM, OSVOS)."""
