"""Train CorrFlow: ``python tools/train.py experiment=corrflow [key=value ...]``.

Exit status 130 when Ctrl-C stopped the run (its last.ckpt saved, the resume command printed).
"""

import sys

import hydra
from omegaconf import DictConfig

from corrflow.train import train
from corrflow.utils.cli import user_errors
from corrflow.utils.pylogger import setup_logging


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    setup_logging()
    _, objects = train(cfg)
    if objects["interrupted"]:
        sys.exit(130)


if __name__ == "__main__":
    main()
