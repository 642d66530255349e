"""Propagate first-frame labels through videos (or segment them with a trained segmenter), write,
score and draw the results.

    python tools/propagate.py task=davis features=checkpoint ckpt=path/to/last.ckpt
    python tools/propagate.py task=davis2016 data.root=/data/DAVIS task.dataset.split=val features=lab
    python tools/propagate.py task=jhmdb protocol=corrflow features=random data.root=/data/JHMDB
    python tools/propagate.py task=davis method=stm ckpt=<finetune run>/checkpoints/final.ckpt
    python tools/propagate.py task=davis2016 method=osvos ckpt=<osvos_parent run>/checkpoints/final.ckpt

See conf/propagate.yaml; the work is done by corrflow.propagation.run.propagate.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from corrflow.propagation.run import propagate
from corrflow.utils.cli import discard_unused_run_dir, user_errors
from corrflow.utils.help import register_help_resolver
from corrflow.utils.quiet import quiet_third_party

register_help_resolver()  # `--help` lists the config groups propagation uses (conf/hydra/propagate.yaml)


@hydra.main(config_path="../conf", config_name="propagate", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    quiet_third_party()  # known third-party tips and warnings (corrflow.utils.quiet)
    with discard_unused_run_dir():  # a failed run leaves no log folder that holds only Hydra's files
        propagate(cfg)


if __name__ == "__main__":
    main()
