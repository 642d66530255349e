"""Fine-tune a segmenter on a corrflow backbone: ``python tools/finetune.py experiment=stm_static
model.backbone.init=<corrflow .ckpt>``, then ``python tools/finetune.py experiment=stm ckpt_path=<its final.ckpt>``;
OSVOS: ``experiment=osvos_parent`` (and ``experiment=osvos_contour`` for boundary snapping)."""

import hydra
from omegaconf import DictConfig

from corrflow.finetune import finetune
from corrflow.utils.cli import discard_unused_run_dir, user_errors
from corrflow.utils.help import register_help_resolver
from corrflow.utils.pylogger import setup_logging
from corrflow.utils.quiet import quiet_third_party

register_help_resolver()  # `--help` lists this tool's config groups (conf/hydra/finetune.yaml)


@hydra.main(config_path="../conf", config_name="finetune", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    setup_logging()
    quiet_third_party()
    with discard_unused_run_dir():  # a run that fails before writing anything leaves no run folder
        finetune(cfg)


if __name__ == "__main__":
    main()
