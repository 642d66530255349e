"""Fit the k-means Lab colour bins on a data set and save the artefact.

``python tools/fit_colour_bins.py data.root=/path/to/videos [colour_bins.path=bins.npz colour_bins.n_frames=10000]``

Uses the training config (same data settings, same default artefact path), so a later
``tools/train.py`` run with the same data finds and reuses the file. Refits if it exists.
"""

import json

import hydra
from omegaconf import DictConfig

from corrflow.models.quantizer import load_colour_bins
from corrflow.train import colour_bins_path, fit_and_save_colour_bins
from corrflow.utils.cli import discard_unused_run_dir, user_errors
from corrflow.utils.help import register_help_resolver
from corrflow.utils.pylogger import setup_logging
from corrflow.utils.quiet import quiet_third_party

register_help_resolver()  # `--help` (conf/fit_colour_bins.yaml) lists its config groups


@hydra.main(config_path="../conf", config_name="fit_colour_bins", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    quiet_third_party()  # known third-party tips and warnings (corrflow.utils.quiet)
    setup_logging()
    with discard_unused_run_dir():  # a failed run leaves no log folder that holds only Hydra's files
        datamodule = hydra.utils.instantiate(cfg.data)
        path = fit_and_save_colour_bins(cfg, datamodule, colour_bins_path(cfg, datamodule))
    centroids, meta = load_colour_bins(path)
    print(f"saved {centroids.shape[0]} colour bins to {path}")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
