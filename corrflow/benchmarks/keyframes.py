"""What keyframes buy: J&F against the number of keyframes given, as a table and a plot.

    python tools/benchmark.py keyframes --out docs/keyframes_davis2016 -- task=davis2016 \\
        data.root=../shared/data/davis2016-dev task.dataset.split=dev protocol=crw features=imagenet

Each setting (``--settings``, default ``count_1 count_2 count_3 count_5 every_20``: 1, 2, 3, 5
keyframes evenly spread, every 20th frame; see :mod:`corrflow.propagation.keyframes`) is one
``tools/propagate.py`` run with ``task.keyframes=<setting>`` (its own results folder under
``--work``, so a re-run resumes), the given keyframes' ground truth taken from the annotations
and the keyframes left out of the score. ``count_1`` is DAVIS's own protocol (the first frame).
Every setting scores a different set of frames (the keyframes drop out), as a person annotating
would see it. Writes ``<out>.md`` (the table, with the command) and ``<out>.png`` (the plot).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import textwrap
from pathlib import Path

__all__ = ["main", "run_keyframe_study"]

DEFAULT_SETTINGS = ("count_1", "count_2", "count_3", "count_5", "every_20")


def run_keyframe_study(settings, overrides, *, work: Path) -> list[dict]:
    """One propagation run per setting; returns rows ``{setting, keyframes (mean a video), J&F, J, F, s/frame}``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from corrflow.propagation.keyframes import resolve_keyframes
    from corrflow.propagation.run import propagate

    conf = str(Path(__file__).resolve().parents[2] / "conf")
    rows = []
    for setting in settings:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=conf, version_base="1.3"):
            cfg = compose(config_name="propagate", overrides=[*overrides, f"task.keyframes={setting}", f"output_dir={work / setting}"])
        GlobalHydra.instance().clear()
        result = propagate(cfg)
        from hydra.utils import instantiate

        dataset = instantiate(cfg.task.dataset)
        n_keys = [len(resolve_keyframes(setting, len(v), given=v.given_frames)) for v in dataset]
        s = result["scores"] or {}
        rows.append({
            "setting": setting, "keyframes": sum(n_keys) / len(n_keys), "J&F": s.get("J&F-Mean"), "J": s.get("J-Mean"),
            "F": s.get("F-Mean"), "s/frame": result["seconds_per_frame"],
        })  # fmt: skip
    return rows


def format_markdown(rows: list[dict], command: str, title: str = "keyframes") -> str:
    lines = [f"# {title}: J&F against the number of keyframes given", "",
             "Each row is one tools/propagate.py run with task.keyframes=<setting> (see corrflow/propagation/keyframes.py);",
             "the given keyframes (and DAVIS's first and last frames) are not scored, so every row scores its own frames.",
             "s / frame counts each pass over a frame (between keyframes, frames are propagated twice).", "",
             f"`{command}`", "", "| keyframes | mean given a video | J&F | J | F | s / frame (a pass) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['keyframes']:.1f} | {r['J&F']:.3f} | {r['J']:.3f} | {r['F']:.3f} | {r['s/frame']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r["keyframes"])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    x = [r["keyframes"] for r in rows]
    for key, style in (("J&F", "o-k"), ("J", "s--"), ("F", "^--")):
        ax.plot(x, [r[key] for r in rows], style, label=key)
    for r in rows:
        ax.annotate(r["setting"], (r["keyframes"], r["J&F"]), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set(xlabel="keyframes given (mean a video)", ylabel="score (given keyframes not scored)")
    ax.set_title(textwrap.fill(title, 48), fontsize=10)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, prog="benchmark.py keyframes")
    p.add_argument("--settings", nargs="*", default=list(DEFAULT_SETTINGS))
    p.add_argument("--out", default="docs/keyframes", help="writes <out>.md and <out>.png")
    p.add_argument("--work", default="logs/propagate/keyframes", help="the runs' results folders (one a setting)")
    p.add_argument("--title", default="keyframes")
    p.add_argument("overrides", nargs="*", help="tools/propagate.py overrides (task, data.root, protocol, features, ...)")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)  # "--" ends --settings: what follows are the overrides
    overrides = [*args.overrides, "progress=false", "overlay=null"]
    rows = run_keyframe_study(args.settings, overrides, work=Path(args.work))
    out_json = Path(args.out).with_suffix(".json")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(rows, indent=1))
    command = "python tools/benchmark.py keyframes " + shlex.join(argv)
    out = Path(args.out)
    text = format_markdown(rows, command, args.title)
    out.with_suffix(".md").parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    plot(rows, out.with_suffix(".png"), args.title)
    print(text)
