"""``RestrictedLocalAttention``: the module form of :func:`corrflow.attention.restricted_attention`."""

from __future__ import annotations

from torch import Tensor, nn

from corrflow.attention import restricted_attention


class RestrictedLocalAttention(nn.Module):
    """Attend from each target location to a (2M+1)^2 window of R reference frames.

    Args:
        radius: M (CorrFlow: 6, a 13 x 13 window).
        temperature: logits are divided by it (CorrFlow: 1).
        topk: keep only the k largest logits (None: all).
        backend: 'auto' or a backend name (see ``corrflow.attention.available_backends``).
    """

    def __init__(self, *, radius: int = 6, temperature: float = 1.0, topk: int | None = None, backend: str = "auto") -> None:
        super().__init__()
        self.radius, self.temperature, self.topk, self.backend = radius, temperature, topk, backend

    def forward(self, query: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        """query (B, C, H, W), keys (B, R, C, H, W), values (B, R, D, H, W) -> (B, D, H, W)."""
        return restricted_attention(
            query, keys, values, radius=self.radius, temperature=self.temperature, topk=self.topk, backend=self.backend
        )

    def extra_repr(self) -> str:
        return f"radius={self.radius}, temperature={self.temperature}, topk={self.topk}, backend={self.backend!r}"
