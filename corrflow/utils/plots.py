"""Training curves from a run's CSV log, as a picture."""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path


def read_metrics_csv(*paths: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Lightning CSVLogger ``metrics.csv`` files -> {metric: [(step, value), ...]} (empty cells
    dropped).

    Several files are one run's pieces in order (``csv/version_0``, ``version_1``, ... of a run
    that was resumed in its own folder): each later piece starts where its checkpoint was, so the
    earlier pieces' rows from that step on (trained again after the resume) are dropped.
    """
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for path in paths:
        piece: dict[str, list[tuple[int, float]]] = defaultdict(list)
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                step = int(float(row["step"]))
                for k, v in row.items():
                    if k not in ("step", "epoch") and v not in ("", None):
                        piece[k].append((step, float(v)))
        if piece:
            start = min(step for values in piece.values() for step, _ in values)
            for k in list(series):
                series[k] = [(st, v) for st, v in series[k] if st < start]
            for k, values in piece.items():
                series[k].extend(values)
    series = {k: v for k, v in series.items() if v}
    if not series:
        raise ValueError(f"{', '.join(map(str, paths))}: no metrics in this CSV")
    return series


def run_metrics_csvs(run: str | os.PathLike) -> list[Path]:
    """A run folder's ``csv/version_<n>/metrics.csv`` files in version order (numeric, so 10
    follows 9)."""
    found = Path(run).glob("csv/version_*/metrics.csv")
    return sorted(found, key=lambda p: int(p.parent.name.split("_")[-1]) if p.parent.name.split("_")[-1].isdigit() else -1)


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


HELD_OUT_KEYS = ("val/J&F", "val/J", "val/F")


def _legend(ax, **kwargs) -> None:
    """``ax.legend(**kwargs)`` when the axis has labelled artists (none: no legend, and no warning)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _save(fig, out_png: str | os.PathLike) -> Path:
    """Lay out, write (its folder made) and close a figure; returns the PNG's path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def read_heldout_scores(folder: str | os.PathLike, key: str = "val/J&F") -> list[tuple[int, float]]:
    """``[(step, score)]`` from a held-out folder: ``<folder>/step<N>/`` each holding an official
    ``global_results-*.csv`` (directly or one level down, as ``tools/propagate.py`` writes them under
    ``scores/``). ``key``: ``val/J&F``, ``val/J`` or ``val/F``."""
    column = {"val/J&F": "J&F-Mean", "val/J": "J-Mean", "val/F": "F-Mean"}[key]
    out = []
    for step_dir in Path(folder).glob("step*"):
        digits = step_dir.name[4:]
        found = sorted(step_dir.glob("global_results-*.csv")) or sorted(step_dir.glob("*/global_results-*.csv"))
        if not digits.isdigit() or not found:
            continue
        with open(found[0], newline="") as f:
            row = next(csv.DictReader(f))
        out.append((int(digits), float(row[column])))
    if not out:
        raise ValueError(f"{folder}: no step<N>/global_results-*.csv (the held-out monitor's folder of a run)")
    return sorted(out)


def plot_heldout_curves(
    runs: dict[str, list[tuple[int, float]]],
    out_png: str | os.PathLike,
    *,
    references: dict[str, float] | None = None,
    key: str = "val/J&F",
    title: str = "",
) -> Path:
    """Held-out ``key`` against training steps for several runs (``{label: [(step, score)]}``, from
    :func:`read_heldout_scores` or a metrics CSV's ``key`` series), with ``references`` (``{label:
    score}``, e.g. Lab features or ImageNet) as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label, series in runs.items():
        if not series:
            raise ValueError(f"{label}: no {key} scores")
        ax.plot(*zip(*series), "-o", ms=4, lw=1.8, label=label)
    for (label, value), style in zip((references or {}).items(), ("--", ":", "-.", (0, (5, 1)), (0, (1, 3))), strict=False):
        ax.axhline(value, color="grey", ls=style, lw=1.2, label=f"{label} ({value:.3f})")
    ax.set(xlabel="training step", ylabel=key, title=title or f"held-out {key}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_png)


def plot_training_curves(
    metrics_csv: str | os.PathLike | list[str | os.PathLike], out_png: str | os.PathLike, *, title: str = "", smooth: int = 10
) -> Path:
    """Loss parts (raw and smoothed), the scheduled-sampling probability and the learning rate
    (``metrics_csv``: one file, or a resumed run's pieces in order, see ``read_metrics_csv``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = read_metrics_csv(*(metrics_csv if isinstance(metrics_csv, list) else [metrics_csv]))
    held_out = [k for k in HELD_OUT_KEYS if k in s]
    fig, axes = plt.subplots(1, 3 + bool(held_out), figsize=(15 + 5 * bool(held_out), 4))
    for key, colour in [("train/loss_step", "k"), ("train/loss_rec", "tab:blue"), ("train/loss_cycle", "tab:orange")]:
        if key in s:
            steps, vals = zip(*s[key])
            axes[0].plot(steps, vals, color=colour, alpha=0.25, lw=0.8)
            axes[0].plot(steps, _smooth(list(vals), smooth), color=colour, lw=1.8, label=key.split("/")[1].replace("_step", ""))
    axes[0].set(xlabel="step", ylabel="NLL", title="losses (light: per step; dark: running mean)")
    _legend(axes[0])
    for key in sorted(k for k in s if k.startswith(("train/loss_rec_", "train/loss_cycle_"))):
        steps, vals = zip(*s[key])
        axes[1].plot(steps, _smooth(list(vals), smooth), lw=1.5, label=key.split("/")[1])
    axes[1].set(xlabel="step", ylabel="NLL", title="each recursion step / cycle (running mean)")
    _legend(axes[1], fontsize=8)
    ax = axes[2]
    if "train/p_gt" in s:
        ax.plot(*zip(*s["train/p_gt"]), color="tab:green", label="P(ground-truth reference)")
    ax.set(xlabel="step", title="schedules")
    lr_key = next((k for k in s if k.startswith("lr-")), None)
    if lr_key:
        ax2 = ax.twinx()
        ax2.plot(*zip(*s[lr_key]), color="tab:red", ls="--", label="learning rate")
        ax2.set_ylim(0, 1.1 * max(v for _, v in s[lr_key]))  # from 0: a constant LR reads as constant
        ax2.set_ylabel("learning rate")
        _legend(ax2, loc="lower right")
    _legend(ax, loc="upper right")
    if held_out:
        ax = axes[3]
        for key, style in zip(HELD_OUT_KEYS, ("-o", "--", ":")):
            if key in s:
                ax.plot(*zip(*s[key]), style, lw=1.8 if key == "val/J&F" else 1.2, ms=4, label=key.split("/")[1])
        ax.set(xlabel="step", ylabel="score", title="held-out label propagation (monitor)")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, out_png)
