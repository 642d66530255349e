"""No import runs up the house: every corrflow module imports only from its own floor or below.

The floors, lowest first (a module's floor is that of the longest entry its dotted name starts
with). Within a floor, packages may import each other; a module never imports from a floor above
its own, at module level or inside a function. Every import statement counts, lazy ones included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import corrflow

PACKAGE_ROOT = Path(corrflow.__file__).parent

LAYERS: list[tuple[str, ...]] = [
    ("corrflow.utils",),  # io, palettes, seeding, the feature-grid convention, CLI errors
    ("corrflow.attention", "corrflow.losses"),  # tensor kernels and losses: torch only
    ("corrflow.data", "corrflow.data.video"),  # finding, decoding and holding videos
    ("corrflow.data.sampling",),  # the resumable training order every training loader shares
    ("corrflow.data.vos", "corrflow.data.keypoints", "corrflow.data.action"),  # one package per task
    ("corrflow.data.pretraining",),  # validates on DAVIS (corrflow.data.vos)
    ("corrflow.models",),  # encoders, CorrFlow, backbones, segmenters, motion (models.motion)
    ("corrflow.features",),  # feature extractors for propagation, built from models
    ("corrflow.metrics",),
    ("corrflow.evaluation",),
    ("corrflow.propagation",),  # the held-out monitor scores with corrflow.evaluation
    ("corrflow.flow", "corrflow.lit"),
    ("corrflow.demo", "corrflow.train"),
    ("corrflow.finetune", "corrflow.benchmarks", "corrflow.api"),
    ("corrflow",),  # the package's own __init__: the public API
]

FLOOR = {prefix: level for level, prefixes in enumerate(LAYERS) for prefix in prefixes}


def floor_of(module: str) -> int | None:
    """The floor of a dotted module name (its longest listed prefix), or None if none fits."""
    parts = module.split(".")
    for cut in range(len(parts), 0, -1):
        level = FLOOR.get(".".join(parts[:cut]))
        if level is not None:
            return level
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(module: str, source: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every corrflow module ``source`` imports (``from x import y`` counts as
    ``x.y`` when ``x.y`` is a floor of its own, e.g. ``from corrflow.data import vos``)."""
    found = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{a.name}") for a in node.names if f"{target}.{a.name}" in FLOOR]
    return [(line, name) for line, name in found if name == "corrflow" or name.startswith("corrflow.")]


def upward_imports(module: str, source: str, *, is_package: bool = False) -> list[str]:
    """Every import of ``source`` (the text of ``module``) that runs up a floor, described."""
    here = floor_of(module)
    out = []
    for line, target in imported_modules(module, source, is_package=is_package):
        there = floor_of(target)
        if there is not None and here is not None and there > here:
            out.append(f"{module}:{line} imports {target} (floor {there} > {here}: {LAYERS[there]} above {LAYERS[here]})")
    return out


def _modules() -> list[Path]:
    return sorted(PACKAGE_ROOT.rglob("*.py"))


def test_every_module_has_a_floor():
    missing = [module_name(p) for p in _modules() if floor_of(module_name(p)) is None]
    assert not missing, f"modules outside every floor of LAYERS (add their package): {missing}"


def test_every_package_has_an_init():
    """Package discovery (setuptools ``find:``) finds only folders with an ``__init__.py``."""
    folders = {p.parent for p in _modules()}
    assert not [str(f) for f in folders if not (f / "__init__.py").is_file()]


def test_no_import_runs_up_a_floor():
    problems = []
    for path in _modules():
        problems += upward_imports(module_name(path), path.read_text(), is_package=path.name == "__init__.py")
    assert not problems, "imports that run up the layers:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "module, source",
    [
        ("corrflow.models.segmenters.stm", "from corrflow.propagation.labels import pad_to_stride\n"),
        ("corrflow.models.backbone", "def f():\n    from corrflow.features.imagenet import EfficientNetLiteFeatures\n"),  # lazy
        ("corrflow.data.vos.datamodule", "import corrflow.lit.schedules\n"),
        ("corrflow.data.video.readers", "from corrflow.data.vos import davis\n"),  # a domain from the shared floor
        ("corrflow.utils.cli", "from corrflow.data.video.readers import VideoReadError\n"),
        ("corrflow.data.vos.clips", "from ...metrics.pck import pck\n"),  # relative
    ],
)
def test_a_deliberate_upward_import_is_caught(module, source):
    assert len(upward_imports(module, source)) == 1


def test_downward_and_sideways_imports_pass():
    assert not upward_imports("corrflow.propagation.targets", "from corrflow.models.corrflow import resize_index_map\nfrom corrflow.utils.grid import pad_to_stride\n")
    assert not upward_imports("corrflow.data.pretraining.datamodule", "from corrflow.data.vos.davis import DAVISDataset\n")
    assert not upward_imports("corrflow.flow.run", "from corrflow.lit.progress import EpochProgressBar\n")  # same floor
