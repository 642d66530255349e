"""A CorrFlow training step under bf16 autocast against the same step in float32.

What is compared: on a GPU ``trainer.precision=auto`` trains in bf16-mixed, where the encoder runs
in bf16 and hands bf16 features to the restricted attention, which takes raw 64-d dot products at
temperature 1 (logits in the hundreds). The attention must compute those logits and its softmax in
float32. The reference is the very same step in float32 *given the encoder's bf16 features*:
the encoder's own bf16 rounding (about 0.5 % of each feature) moves logits of ~400 by about a unit
too, which no attention precision can undo: for this net it alone puts the gradients of an
all-float32 step 130 % away (they hinge on near-tied window logits; the loss only 3e-4). That is
the price of bf16-mixed itself (``trainer.precision=32-true`` is the faithful choice), not what
this file tests.

Tolerance: every loss part to 1e-6 relative, the head conv's weight gradient to 2e-2 (relative
norm). Measured: the loss parts equal (0.0: the chained soft predictions stay float32, see
CorrFlow.colourise), the gradient 2.2e-3 off (the head conv's own bf16 backward under autocast).
With the attention's logits rounded in bf16 (the code before the fix) the loss parts were
0.9-4.9e-4 off and the gradient 48 %.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from corrflow.models.corrflow import CorrFlow
from corrflow.models.encoder import ResNetEncoder
from corrflow.models.local_attention import RestrictedLocalAttention

pytestmark = pytest.mark.usefixtures("one_thread")

LOSS_PARTS = ["loss", "loss_rec_1", "loss_rec_2", "loss_cycle_1", "loss_cycle_2"]
MEAN_ABS_LOGIT = 400.0


class AutocastFeatures(nn.Module):
    """An encoder run under CPU bf16 autocast, its features handed on in float32."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.encoder(x).float()


def make_net(backend: str) -> CorrFlow:
    """As tests/test_models_corrflow.py builds it (16-d features, radius 2, 4 bins), in training
    mode, with the head conv rescaled so that the mean |logit| between frames is 400: raw dot
    products as large as a trained 64-d CorrFlow encoder's, whatever the encoder's init."""
    torch.manual_seed(0)
    # the torchvision init the tolerances below were measured with (the file tests the attention's precision, not the init)
    encoder = ResNetEncoder(out_channels=16, init="torchvision")
    net = CorrFlow(encoder=encoder, attention=RestrictedLocalAttention(radius=2, backend=backend), n_bins=4)
    frames, _ = clip()
    with torch.no_grad():
        f = net.eval().features(frames)
        scale = (MEAN_ABS_LOGIT / (f[:, 0] * f[:, 1]).sum(1).abs().mean()).sqrt()
        net.encoder.head.weight.mul_(scale)
        net.encoder.head.bias.mul_(scale)
    return net.train()


def clip():
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 3, 32, 32, generator=g), torch.randint(0, 4, (2, 3, 32, 32), generator=g)


def step(net: CorrFlow, weight: nn.Parameter, *, autocast: bool) -> tuple[dict[str, Tensor], Tensor]:
    """One training step's losses and the gradient of ``weight``."""
    frames, labels = clip()
    net.zero_grad()
    weight.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = net(frames, labels, use_gt=[True])
    out["loss"].backward()
    return {k: out[k].detach() for k in LOSS_PARTS}, weight.grad.clone()


@pytest.mark.parametrize("backend", ["auto", "unfold"])
def test_bf16_autocast_step_matches_float32_on_the_same_features(backend: str) -> None:
    net = make_net(backend)
    frames, _ = clip()
    with torch.no_grad():
        f = net.features(frames)
    assert (f[:, 0] * f[:, 1]).sum(1).abs().mean() > 200  # the premise: logits in the hundreds

    head = net.encoder.head.weight
    amp_losses, amp_grad = step(net, head, autocast=True)
    reference = CorrFlow(encoder=AutocastFeatures(net.encoder), attention=net.attention, n_bins=4)
    ref_losses, ref_grad = step(reference, head, autocast=False)  # same weights (shared encoder), float32 after it

    assert amp_losses["loss"].dtype == torch.float32
    for name in LOSS_PARTS:
        torch.testing.assert_close(amp_losses[name], ref_losses[name], rtol=1e-6, atol=0, msg=lambda m, name=name: f"{name}: {m}")
    assert torch.isfinite(amp_grad).all()
    rel = ((amp_grad - ref_grad).norm() / ref_grad.norm()).item()
    assert rel < 2e-2, f"head gradient differs by {rel:.2e} (relative norm)"
