"""Train CorrFlow: ``python tools/train.py experiment=corrflow [key=value ...]``.

Exit status 130 when Ctrl-C stopped the run (its last.ckpt saved, the resume command printed).
"""

import sys

import hydra
from omegaconf import DictConfig

from corrflow.train import train
from corrflow.utils.cli import discard_unused_run_dir, user_errors
from corrflow.utils.help import register_help_resolver
from corrflow.utils.pylogger import setup_logging
from corrflow.utils.quiet import quiet_third_party

register_help_resolver()  # `--help` lists this tool's config groups (conf/hydra/train.yaml)


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    setup_logging()
    quiet_third_party()
    with discard_unused_run_dir():  # a run that fails before writing anything leaves no run folder
        _, objects = train(cfg)
    if objects["interrupted"]:
        sys.exit(130)


if __name__ == "__main__":
    main()
