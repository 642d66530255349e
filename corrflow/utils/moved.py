"""Where moved modules and names live now, applied wherever saved files are read back.

Checkpoints, run configs (``.hydra/config.yaml``) and anything pickled record the dotted paths of
the code that wrote them: ``_target_`` strings, and the module and name of every pickled class or
function. When the package was laid out by domain (``corrflow.data.vos_clips`` became
``corrflow.data.vos.clips``, ``corrflow.models.motion_squeeze`` became
``corrflow.models.motion.motion_squeeze``, ...), those paths changed: :data:`MOVED_MODULES` and
:data:`MOVED_NAMES` say where each went, :func:`current_path` rewrites one dotted path,
:func:`upgrade_targets` every ``_target_`` in a config or ``hyper_parameters`` tree, and
:data:`legacy_pickle` is a ``pickle_module`` for ``torch.load`` whose unpickler finds old classes
at their new homes. Paths that were not moved pass through unchanged. The other way,
:func:`legacy_targets` spells a config's ``_target_`` paths as before the move, for hashes of a
config that finished runs hold (``corrflow.propagation.run.fingerprint``).
"""

from __future__ import annotations

import importlib.util
import pickle
from collections.abc import Mapping
from types import ModuleType
from typing import Any

__all__ = ["MOVED_MODULES", "MOVED_NAMES", "current_module", "current_path", "legacy_path", "legacy_pickle", "legacy_targets", "upgrade_targets"]

# old module -> new module (every name of the old module went there, unless MOVED_NAMES says otherwise)
MOVED_MODULES: dict[str, str] = {
    "corrflow.data.readers": "corrflow.data.video.readers",
    "corrflow.data.sources": "corrflow.data.video.sources",
    "corrflow.data.samples": "corrflow.data.video.samples",
    "corrflow.data.clips": "corrflow.data.pretraining.clips",
    "corrflow.data.datamodule": "corrflow.data.pretraining.datamodule",
    "corrflow.data.davis": "corrflow.data.vos.davis",
    "corrflow.data.davis_resized": "corrflow.data.vos.davis_resized",
    "corrflow.data.vos": "corrflow.data.vos.annotated",  # the module became the vos/ package
    "corrflow.data.vos_clips": "corrflow.data.vos.clips",
    "corrflow.data.vos_datamodule": "corrflow.data.vos.datamodule",
    "corrflow.data.vos_static": "corrflow.data.vos.static",
    "corrflow.data.ytvos": "corrflow.data.vos.ytvos",
    "corrflow.data.ytvos_holdout": "corrflow.data.vos.ytvos_holdout",
    "corrflow.data.jhmdb": "corrflow.data.keypoints.jhmdb",
    "corrflow.data.keypoint_annotations": "corrflow.data.keypoints.annotations",
    "corrflow.data.keypoint_videos": "corrflow.data.keypoints.videos",
    "corrflow.data.action_datamodule": "corrflow.data.action.datamodule",
    "corrflow.data.action_videos": "corrflow.data.action.videos",
    "corrflow.data.synthetic_motion": "corrflow.data.action.synthetic_motion",
    "corrflow.models.displacement": "corrflow.models.motion.displacement",
    "corrflow.models.motion_squeeze": "corrflow.models.motion.motion_squeeze",
    "corrflow.models.temporal_shift": "corrflow.models.motion.temporal_shift",
    "corrflow.models.video_classifier": "corrflow.models.motion.video_classifier",
}

# (old module, name) -> new module, for names that left a module that stayed (or that went
# elsewhere than the rest of their module): helpers moved down a layer, the frame-file records
# split out of the DAVIS reader. (The EfficientNet-Lite0 builder, private to
# corrflow.features.imagenet before, is corrflow.models.lite0.build_lite0 now: nothing recorded it.)
MOVED_NAMES: dict[tuple[str, str], str] = {
    **{
        ("corrflow.data.davis", name): "corrflow.data.video.frame_files"
        for name in ("FRAME_EXTENSIONS", "read_frame", "frame_size", "list_frame_files", "FrameFiles", "AnnotatedFrameFiles", "VideoSet")
    },
    ("corrflow.data.clips", "resize_frames"): "corrflow.data.video.resize",
    ("corrflow.propagation.labels", "pad_to_stride"): "corrflow.utils.grid",
    ("corrflow.propagation.labels", "feature_grid"): "corrflow.utils.grid",
    ("corrflow.lit.schedules", "linear_schedule"): "corrflow.utils.schedules",
    ("corrflow.metrics.pck", "query_frame_index"): "corrflow.data.keypoints.videos",
}


def _is_submodule(module: str, name: str) -> bool:
    """Whether ``module.name`` is a module of the current code, for an old ``module`` that became
    a package of that name (``corrflow.data.vos``: ``corrflow.data.vos.clips`` is a current path)."""
    if not MOVED_MODULES.get(module, "").startswith(module + "."):
        return False
    try:
        return importlib.util.find_spec(f"{module}.{name}") is not None
    except (ImportError, ValueError):
        return False


def current_module(module: str, name: str) -> str:
    """The module that holds ``name`` now, for a ``name`` recorded as living in ``module``."""
    moved = MOVED_NAMES.get((module, name))
    if moved is not None:
        return moved
    return MOVED_MODULES.get(module, module)


def current_path(path: str) -> str:
    """A dotted path (``corrflow.data.vos_datamodule.VOSClipDataModule``, a ``_target_``) as the
    current code spells it; a path that was not moved comes back unchanged."""
    if not isinstance(path, str) or not path.startswith("corrflow."):
        return path
    parts = path.split(".")
    for cut in range(len(parts) - 1, 1, -1):  # the longest recorded module first
        module, rest = ".".join(parts[:cut]), parts[cut:]
        if module not in MOVED_MODULES and not any(m == module for m, _ in MOVED_NAMES):
            continue
        if _is_submodule(module, rest[0]):  # already a current path under a module that became a package
            return path
        return ".".join([current_module(module, rest[0]), *rest])
    return path


def upgrade_targets(tree: Any) -> Any:
    """``tree`` (dicts, lists, OmegaConf containers) with every ``_target_`` value rewritten by
    :func:`current_path`; dicts, lists and OmegaConf containers are copied (interpolations kept
    unresolved), other values returned as they are."""
    if type(tree).__module__.startswith("omegaconf"):  # a DictConfig or ListConfig
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(tree, DictConfig | ListConfig):
            return OmegaConf.create(upgrade_targets(OmegaConf.to_container(tree, resolve=False)))
    if isinstance(tree, Mapping):
        return {k: current_path(v) if k == "_target_" else upgrade_targets(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple) and not hasattr(tree, "_fields"):
        return type(tree)(upgrade_targets(v) for v in tree)
    return tree


def legacy_path(path: str) -> str:
    """A current dotted path as the code before the layout by domain spelled it (the inverse of
    :func:`current_path`); a path that was not moved comes back unchanged."""
    if not isinstance(path, str) or not path.startswith("corrflow."):
        return path
    parts = path.split(".")
    for cut in range(len(parts) - 1, 1, -1):  # the longest module first
        module, rest = ".".join(parts[:cut]), parts[cut:]
        old = _OLD_NAMES.get((module, rest[0])) or _OLD_MODULES.get(module)
        if old is not None:
            return ".".join([old, *rest])
    return path


def legacy_targets(tree: Any) -> Any:
    """``tree`` (plain dicts and lists) with every ``_target_`` value spelled by :func:`legacy_path`."""
    if isinstance(tree, Mapping):
        return {k: legacy_path(v) if k == "_target_" else legacy_targets(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple) and not hasattr(tree, "_fields"):
        return type(tree)(legacy_targets(v) for v in tree)
    return tree


_OLD_MODULES = {new: old for old, new in MOVED_MODULES.items()}
_OLD_NAMES = {(new, name): old for (old, name), new in MOVED_NAMES.items()}


class _Unpickler(pickle.Unpickler):
    """Finds a pickled class or function by where it lives now (see :func:`current_module`)."""

    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(current_module(module, name), name)


legacy_pickle = ModuleType("corrflow.utils.moved.legacy_pickle", "``torch.load(..., pickle_module=legacy_pickle, "
                           "weights_only=False)`` reads files that pickled classes or functions at their old module paths.")
legacy_pickle.__dict__.update(Unpickler=_Unpickler, Pickler=pickle.Pickler, load=pickle.load, loads=pickle.loads, dump=pickle.dump,
                              dumps=pickle.dumps, HIGHEST_PROTOCOL=pickle.HIGHEST_PROTOCOL, DEFAULT_PROTOCOL=pickle.DEFAULT_PROTOCOL)
