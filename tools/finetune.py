"""Fine-tune a segmenter on a corrflow backbone: ``python tools/finetune.py experiment=stm_static
model.backbone.init=<corrflow .ckpt>``, then ``python tools/finetune.py experiment=stm ckpt_path=<its final.ckpt>``;
OSVOS: ``experiment=osvos_parent`` (and ``experiment=osvos_contour`` for boundary snapping)."""

import hydra
from omegaconf import DictConfig

from corrflow.finetune import finetune
from corrflow.utils.cli import user_errors
from corrflow.utils.pylogger import setup_logging


@hydra.main(config_path="../conf", config_name="finetune", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    setup_logging()
    finetune(cfg)


if __name__ == "__main__":
    main()
