"""``--help`` of the Hydra tools says what the tool does, the five commands people run most (each
a valid command line), where the outputs go, and the config groups the tool uses, no others."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from tests.test_utils_cli import run_tool

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
NOT_CHOSEN_HERE = {"hydra", "local"}  # Hydra's own group; the optional local override file


def defaults_groups(config: str) -> set[str]:
    """The config groups of conf/<config>.yaml's defaults list (``protocol@monitor.protocol`` kept whole)."""
    groups = set()
    for entry in OmegaConf.load(CONF / f"{config}.yaml").defaults:
        if isinstance(entry, str):
            continue  # _self_
        (key,) = entry.keys()
        key = key.removeprefix("optional ").removeprefix("override ")
        if key not in NOT_CHOSEN_HERE:
            groups.add(key)
    return groups


def sections(text: str) -> dict[str, list[str]]:
    """The help's blocks, by their first line, each with its following (non-empty) lines."""
    out: dict[str, list[str]] = {}
    for block in text.strip().split("\n\n"):
        first, *rest = block.splitlines()
        out[first] = rest
    return out


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    texts = {}
    for tool in ("train", "propagate", "finetune"):
        proc = run_tool(REPO / "tools" / f"{tool}.py", "--help")
        assert proc.returncode == 0, proc.stderr[-3000:]
        texts[tool] = proc.stdout
    return texts


@pytest.mark.parametrize("tool", ["train", "propagate", "finetune"])
def test_help_says_what_the_tool_does_and_how_it_is_used(helps, tool: str) -> None:
    text = helps[tool]
    assert text.startswith(f"tools/{tool}.py: "), text[:200]
    assert "powered by Hydra" not in text and "_target_" not in text  # not Hydra's config dump
    assert len(text.splitlines()) < 60
    blocks = sections(text)
    commands = blocks["The commands people run most:"]
    assert len(commands) == 5 and all(c.strip().startswith(f"python tools/{tool}.py ") for c in commands), commands
    assert any(k.startswith("Outputs: ") for k in blocks), list(blocks)


@pytest.mark.parametrize("tool", ["train", "propagate", "finetune"])
def test_the_commands_in_the_help_compose(helps, tool: str) -> None:
    """Every override of the five commands names a real group option or key: the config composes."""
    for line in sections(helps[tool])["The commands people run most:"]:
        # a placeholder (<run>) stands for a run folder's name
        args = shlex.split(re.sub(r"<[a-z ]+>", "2026-01-01_00-00-00", line.split("#")[0]))[2:]
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
                compose(config_name=tool, overrides=args)
        finally:
            GlobalHydra.instance().clear()


@pytest.mark.parametrize("tool", ["train", "propagate", "finetune"])
def test_help_lists_the_config_groups_the_tool_uses_and_no_others(helps, tool: str) -> None:
    listed = {}
    for line in sections(helps[tool])["Config groups (group=option):"]:
        name, _, options = line.strip().partition(": ")
        listed[name] = options.split(", ")
    used = defaults_groups(tool)
    assert used <= set(listed), f"--help does not list {sorted(used - set(listed))}"
    for name, options in listed.items():
        group = name.split("@")[0]
        assert (CONF / group).is_dir(), name
        assert options == sorted(p.stem for p in (CONF / group).glob("*.yaml")), name
        # nested groups (model/net/encoder) are chosen through the tool's own groups
        assert name in used or "/" in name, f"{tool} --help lists {name}, which {tool} does not use"
    if tool == "propagate":
        assert set(listed) == {"task", "method", "features", "protocol", "paths"}
        assert not {"experiment", "trainer", "logger", "callbacks"} & set(listed)
