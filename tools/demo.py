"""The demo page: load your video, mark the objects, watch them propagate (``pip install -e ".[demo]"``).

    python tools/demo.py                                   # lab features until you train one
    python tools/demo.py ckpt=logs/corrflow/runs/<run>/checkpoints/last.ckpt
    python tools/demo.py device=cpu port=8080 max_frames=30 short_side=180

Prints the page's address. See conf/demo.yaml; the page is corrflow.demo.app.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from corrflow.utils.cli import user_errors
from corrflow.utils.help import register_help_resolver
from corrflow.utils.quiet import quiet_third_party

register_help_resolver()  # `--help` lists this tool's config groups (conf/demo.yaml)


@hydra.main(config_path="../conf", config_name="demo", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    quiet_third_party()  # known third-party tips and warnings (corrflow.utils.quiet)
    from corrflow.demo.app import build_app, serve
    from corrflow.utils.threads import set_threads

    set_threads(cfg.get("threads", "auto"))  # the cores this process may use (corrflow.utils.threads)

    app = build_app(
        ckpt=cfg.ckpt, device=cfg.device, samples_dir=cfg.samples_dir, sample=cfg.sample, features=cfg.features,
        protocol=cfg.protocol, max_frames=cfg.max_frames, short_side=cfg.short_side, n_objects=cfg.n_objects,
        work_dir=cfg.work_dir,
    )  # fmt: skip
    serve(app, host=cfg.host, port=cfg.port)


if __name__ == "__main__":
    main()
