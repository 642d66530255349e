"""Plot a training run's curves: ``python tools/plot_training.py <run dir or metrics.csv> [-o out.png]``."""

import argparse
import sys
from pathlib import Path

from corrflow.utils.cli import user_errors
from corrflow.utils.plots import plot_training_curves, run_metrics_csvs


@user_errors
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("run", help="a run directory (its csv/version_*/metrics.csv, joined in order) or a metrics.csv")
    p.add_argument("-o", "--out", default=None, help="output PNG (default: <run>/training_curves.png)")
    p.add_argument("--title", default="")
    p.add_argument("--smooth", type=int, default=10)
    a = p.parse_args(argv)
    run = Path(a.run)
    csvs = [run] if run.is_file() else run_metrics_csvs(run)  # a resumed run's pieces, joined
    if not csvs:
        raise FileNotFoundError(f"no metrics.csv under {run} (train with logger=csv, the default)")
    out = Path(a.out) if a.out else (run.parent if run.is_file() else run) / "training_curves.png"
    print(plot_training_curves(csvs, out, title=a.title, smooth=a.smooth))
    return 0


if __name__ == "__main__":
    sys.exit(main())
