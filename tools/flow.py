"""The displacement field and confidence a feature extractor gives between consecutive frames,
read off its local correlation (MotionSqueeze's kernel soft-argmax) with no further training.

    python tools/flow.py video=path/to/video.mp4 ckpt=path/to/last.ckpt
    python tools/flow.py video=path/to/frames/ features=lab
    python tools/flow.py video=path/to/video.mp4 features=random max_side=480 estimator=soft_argmax

See conf/flow.yaml; the work is done by corrflow.flow.run.flow.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from corrflow.flow.run import flow
from corrflow.utils.cli import discard_unused_run_dir, user_errors
from corrflow.utils.help import register_help_resolver
from corrflow.utils.quiet import quiet_third_party

register_help_resolver()  # `--help` lists this tool's config groups (conf/flow.yaml)


@hydra.main(config_path="../conf", config_name="flow", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    quiet_third_party()  # known third-party tips and warnings (corrflow.utils.quiet)
    with discard_unused_run_dir():  # a failed run leaves no log folder that holds only Hydra's files
        flow(cfg)


if __name__ == "__main__":
    main()
