"""Plot training curves.

    python tools/plot_training.py <run dir or metrics.csv> [-o out.png]
        a run's losses, schedules and (with the held-out monitor) val/J&F, J, F
    python tools/plot_training.py <run> <run> ... --heldout [--labels a b ...] [--ref "Lab=0.289" ...] -o out.png
        several runs' held-out val/J&F against steps (from each run's heldout/step<N>/ CSVs, else
        its metrics.csv), with reference scores as lines; --heldout-dir names another folder of
        step<N>/ results (e.g. checkpoints scored afterwards under another protocol)
"""

import argparse
import sys
from pathlib import Path

from corrflow.utils.cli import user_errors
from corrflow.utils.plots import (
    plot_heldout_curves,
    plot_training_curves,
    read_heldout_scores,
    read_metrics_csv,
    run_metrics_csvs,
)
from corrflow.utils.quiet import quiet_third_party


def _csvs(run: Path) -> list[Path]:
    csvs = [run] if run.is_file() else run_metrics_csvs(run)  # a resumed run's pieces, joined
    if not csvs:
        raise FileNotFoundError(f"no metrics.csv under {run} (train with logger=csv, the default)")
    return csvs


def _reference(text: str) -> tuple[str, float]:
    name, sep, value = text.rpartition("=")
    if not sep or not name:
        raise ValueError(f"--ref takes NAME=SCORE, got {text!r}")
    return name, float(value)


@user_errors
def main(argv=None) -> int:
    quiet_third_party()  # known third-party tips and warnings (corrflow.utils.quiet)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run directories (their csv/version_*/metrics.csv, joined in order) or metrics.csv files")
    p.add_argument("-o", "--out", default=None, help="output PNG (default: <run>/training_curves.png; required with several runs)")
    p.add_argument("--title", default="")
    p.add_argument("--smooth", type=int, default=10)
    p.add_argument("--heldout", action="store_true", help="the held-out monitor's val/J&F of every run in one plot")
    p.add_argument("--labels", nargs="+", default=None, help="with --heldout: one label per run (default: the folder names)")
    p.add_argument("--ref", action="append", default=[], metavar="NAME=SCORE", help="with --heldout: a reference line (repeatable)")
    p.add_argument("--key", default="val/J&F", help="with --heldout: the metric (val/J&F, val/J or val/F)")
    p.add_argument("--heldout-dir", default="heldout", help="with --heldout: the folder of step<N>/ scores in each run (default: heldout)")
    a = p.parse_args(argv)
    runs = [Path(r) for r in a.runs]
    if a.heldout:
        labels = a.labels or [r.name for r in runs]
        if len(labels) != len(runs):
            raise ValueError(f"{len(runs)} runs but {len(labels)} labels")
        if a.out is None:
            raise ValueError("--heldout needs -o/--out")
        refs = dict(_reference(r) for r in a.ref)
        series = {}
        for label, run in zip(labels, runs, strict=True):
            folder = run / a.heldout_dir
            if folder.is_dir():
                series[label] = read_heldout_scores(folder, a.key)
            else:
                metrics = read_metrics_csv(*_csvs(run))
                if a.key not in metrics:
                    raise ValueError(f"{run}: neither {folder} nor {a.key} in its metrics.csv (train with data.val_root=...)")
                series[label] = metrics[a.key]
        print(plot_heldout_curves(series, a.out, references=refs, key=a.key, title=a.title))
        return 0
    if len(runs) > 1:
        raise ValueError("several runs are compared with --heldout; without it, give one run")
    run = runs[0]
    out = Path(a.out) if a.out else (run.parent if run.is_file() else run) / "training_curves.png"
    print(plot_training_curves(_csvs(run), out, title=a.title, smooth=a.smooth))
    return 0


if __name__ == "__main__":
    sys.exit(main())
