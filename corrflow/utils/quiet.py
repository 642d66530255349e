"""Known third-party noise, silenced in the tools (``tools/*.py`` call :func:`quiet_third_party`).

Each entry is a message a run prints that says nothing about this run:

- Lightning's "Tip: ... litlogger" advertisement, at every ``Trainer``;
- torch's deprecation of ``isinstance(treespec, LeafSpec)``, which Lightning's own code still
  makes (a FutureWarning at the first step);
- Lightning's "`weights_only` was not set, defaulting to `False`" at each checkpoint saved
  without the argument (full checkpoints are what a resume needs);
- ModelCheckpoint's "Checkpoint directory ... exists and is not empty", which a resumed run meets
  by design: it continues in its own run folder;
- Lightning's "Found N module(s) in eval mode at the start of training": corrflow's only such
  modules are the BatchNorms that ``model.backbone.freeze_bn=true`` keeps on their running
  statistics, on purpose;
- Lightning's "Seed set to N" (``seed_everything``), printed before anything of the run's own:
  corrflow's first line of a run names the seed itself (``git ...; seed N; ...``);
- Lightning's device lines where they say nothing: "GPU available: False, used: False" on a
  machine without a GPU, and "TPU available: False, using: 0 TPU cores" (a GPU that is there, or
  one left unused, is still reported, as is every other device line);
- httpx's "HTTP Request: ..." lines, Gradio's requests to the demo page it has just started
  (``tools/demo.py``), printed before the page's address.

Only these exact messages go; every other warning and log line still shows. The library itself
silences nothing (a notebook or a test sees everything), and the tests fail on a new
DeprecationWarning raised from ``corrflow/`` (pyproject.toml's ``filterwarnings``).
"""

from __future__ import annotations

import logging
import re
import warnings

__all__ = ["KNOWN_LOG_LINES", "KNOWN_WARNINGS", "quiet_third_party"]

# (message regex, category): matched at the start of the warning's message.
KNOWN_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    (r"Checkpoint directory .* exists and is not empty", UserWarning),
    (r"Found \d+ module\(s\) in eval mode at the start of training", UserWarning),
)

# logger name -> message regexes (matched at the start of the formatted message). Lightning logs
# its rank-zero messages through whichever of these rank_zero modules was imported last.
_RANK_ZERO = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
              "lightning_utilities.core.rank_zero", "lightning.pytorch.utilities.rank_zero",
              "lightning.fabric.utilities.rank_zero")  # fmt: skip
_SEED = ("lightning_fabric.utilities.seed", "lightning.fabric.utilities.seed")
_CHECKPOINT_CONNECTOR = ("pytorch_lightning.trainer.connectors.checkpoint_connector",
                         "lightning.pytorch.trainer.connectors.checkpoint_connector")  # fmt: skip
KNOWN_LOG_LINES: dict[str, tuple[str, ...]] = {
    **{name: (r".*Tip: For seamless cloud logging.*litlogger", r"GPU available: False, used: False$",
              r"TPU available: False, using: 0 TPU cores$") for name in _RANK_ZERO},
    **{name: (r"(\[rank: \d+\] )?Seed set to -?\d+$",) for name in _SEED},
    **{name: (r"`weights_only` was not set, defaulting to `False`",) for name in _CHECKPOINT_CONNECTOR},
    "httpx": (r"HTTP Request: ",),
}


class _DropKnownLines(logging.Filter):
    """Drops the records whose message matches one of ``patterns``."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        super().__init__()
        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to judge
            return True
        return not any(p.match(message) for p in self.patterns)


def quiet_third_party() -> None:
    """Silence :data:`KNOWN_WARNINGS` and :data:`KNOWN_LOG_LINES` in this process (idempotent)."""
    for message, category in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, patterns in KNOWN_LOG_LINES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnownLines) for f in logger.filters):
            logger.addFilter(_DropKnownLines(patterns))
