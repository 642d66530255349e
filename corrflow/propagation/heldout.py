"""``HeldOutPropagation``: label propagation with a given encoder over a DAVIS-layout split, written
and scored by the same code as ``tools/propagate.py`` and ``tools/evaluate.py``.

It is the held-out monitor of pretraining (DINO's k-NN monitor, for correspondence): every so
many training steps, :class:`corrflow.lit.corrflow_module.CorrFlowLitModule` hands it the encoder
being trained, the first-frame masks of sequences it never trains on are propagated under a
protocol (``conf/protocol/``), the predictions are written as palette PNGs and scored with the
official DAVIS rules. Nothing here is a second copy: the per-video loop is
:func:`corrflow.propagation.run.propagate_video`, the segmenter a
:class:`~corrflow.propagation.propagator.LabelPropagator`, the targets
:class:`~corrflow.propagation.targets.MaskTargets`, the scores
:func:`corrflow.evaluation.davis.evaluate_davis`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from corrflow.data.vos.davis import DAVISDataset, DAVISVideo
from corrflow.evaluation.davis import evaluate_davis
from corrflow.metrics.davis import DAVISScores
from corrflow.propagation.propagator import LabelPropagator
from corrflow.propagation.run import propagate_video
from corrflow.propagation.targets import MaskTargets

__all__ = ["HeldOutPropagation"]


class HeldOutPropagation:
    """Propagate first-frame masks with an encoder, then score them.

    Args:
        propagator: the protocol's partial :class:`LabelPropagator` (``protocol.propagator``),
            called with the features, ``device`` and ``harden``.
        label_resize: the protocol's ``label_resize`` (how masks reach the grid and come back).
        name: the protocol's name (for the log and the folders).

    Use: :meth:`propagate` each video (any rank, any order) into one results folder, then
    :meth:`score` the folder once every video is written.
    """

    def __init__(
        self,
        *,
        propagator: Callable[..., LabelPropagator],
        label_resize: str = "bilinear",
        name: str = "crw",
    ) -> None:
        self.propagator = propagator
        self.targets = MaskTargets(label_resize=label_resize, validate_annotations=False)
        self.name = name

    @torch.no_grad()
    def propagate(self, encoder: nn.Module, video: DAVISVideo, results_dir: str | os.PathLike) -> int:
        """Write ``<results_dir>/<video>/%05d.png`` propagated from its first mask with ``encoder``
        (used as it is: put it in eval mode first); returns the frames written."""
        device = next(encoder.parameters()).device
        segmenter = self.propagator(encoder, device=device, harden=self.targets.harden)
        return propagate_video(video, segmenter=segmenter, targets=self.targets, results_dir=Path(results_dir), recorder=None, progress=False)

    def score(
        self,
        dataset: DAVISDataset,
        results_dir: str | os.PathLike,
        *,
        output_dir: str | os.PathLike | None = None,
        sequences: Sequence[str] | None = None,
    ) -> DAVISScores:
        """Score the written results of ``dataset`` (or its ``sequences``) with the official rules;
        the CSVs go to ``output_dir`` (default: the results folder)."""
        return evaluate_davis(
            results_dir, dataset.root, sequences=list(sequences or dataset.names), year=dataset.year,
            resolution=dataset.resolution, output_dir=output_dir, progress=False, single_object=dataset.single_object,
        )  # fmt: skip

    @staticmethod
    def clear(results_dir: str | os.PathLike) -> None:
        """Remove an earlier pass's results."""
        shutil.rmtree(results_dir, ignore_errors=True)
