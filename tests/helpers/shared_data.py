"""Where the real development data lives, for the few tests that use it when it is there.

The data sits beside the project, at ``../shared/data`` from its root (see that folder's
README); ``CORRFLOW_SHARED_DATA`` points elsewhere. Nothing here is required: every test that
reads it skips itself, with a reason naming the missing path, when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV_VAR = "CORRFLOW_SHARED_DATA"
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # tests/helpers/shared_data.py -> project root


def shared_data_dir() -> Path:
    """The shared data folder: ``$CORRFLOW_SHARED_DATA`` if set (and non-empty), else
    ``<project root>/../shared/data``. It may not exist."""
    override = os.environ.get(ENV_VAR)
    return Path(override).expanduser() if override else (PROJECT_ROOT.parent / "shared" / "data").resolve()


def shared_path(*parts: str) -> Path:
    """A path inside the shared data folder, e.g. ``shared_path("davis2016-dev")``."""
    return shared_data_dir().joinpath(*parts)


def missing_reason(path: Path, *, what: str = "shared data") -> str | None:
    """``None`` when ``path`` exists, else a skip reason naming it and how to point elsewhere."""
    if path.exists():
        return None
    return f"{what} absent: {path} (set {ENV_VAR} to the shared data folder)"


def skip_if_missing(path: Path, *, what: str = "shared data") -> pytest.MarkDecorator:
    """A skip marker for a test that reads ``path``, e.g. ``@skip_if_missing(shared_path("davis2016-dev"))``."""
    reason = missing_reason(path, what=what)
    return pytest.mark.skipif(reason is not None, reason=reason or "")
