"""Label propagation: pure tensor functions (``functional``, ``labels``), the per-video state
(``LabelPropagator``), what is propagated (``targets``) and the run over a dataset (``run``)."""

from corrflow.propagation.functional import context_indices, mixed_context_attention, onehot_argmax
from corrflow.propagation.propagator import LabelPropagator

__all__ = ["LabelPropagator", "context_indices", "mixed_context_attention", "onehot_argmax"]
