"""The VQ quantizer: nearest codes, straight-through gradients, the loss, and dead-code restarts."""

from __future__ import annotations

import torch

from latentzoo.plugins.vqgan.model import VectorQuantizer


def clustered(n: int, generator: torch.Generator) -> torch.Tensor:
    """Latents (n, 2, 1, 1) around two points: most codes of a 16-code book go unused."""
    centres = torch.tensor([[1.0, 0.0], [-1.0, 0.5]])
    pick = torch.randint(0, 2, (n,), generator=generator)
    return (centres[pick] + 0.01 * torch.randn(n, 2, generator=generator))[:, :, None, None]


def test_nearest_code_loss_and_straight_through():
    vq = VectorQuantizer(3, 2, beta=0.25)
    with torch.no_grad():
        vq.embedding.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 0.0]]))
    vq.initialised.fill_(True)
    vq.eval()
    z = torch.tensor([[0.9, 0.8], [-0.7, 0.1]])[:, :, None, None].requires_grad_(True)
    z_q, loss, idx, _ = vq(z)
    assert idx.flatten().tolist() == [1, 2]
    e = vq.embedding.weight[[1, 2]].detach()[:, :, None, None]
    assert torch.allclose(z_q, e)
    # ||sg[z] - e||^2 + beta ||z - sg[e]||^2, both as means (van den Oord et al. 2017, eq. 3)
    assert torch.allclose(loss, 1.25 * (z.detach() - e).pow(2).mean())
    z_q.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))  # straight-through: d z_q / d z = I


def restarted_codes(threshold: float, steps: int = 200) -> int:
    """How many of 16 codes end up near the data's two clusters after training-mode passes."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    vq = VectorQuantizer(16, 2, dead_threshold=threshold).train()
    vq(clustered(64, g))  # data initialisation: every code starts at an encoder output
    with torch.no_grad():
        vq.embedding.weight[8:] = 10.0  # push half of them far away: dead from now on
    for _ in range(steps):
        vq(clustered(64, g))
    return int((vq.embedding.weight.norm(dim=1) < 3).sum())


def test_dead_codes_are_restarted_at_encoder_outputs_unless_the_threshold_is_zero():
    assert restarted_codes(0.5) == 16  # all dead codes were moved back onto the data
    assert restarted_codes(0.0) == 8  # threshold 0: nothing is ever restarted
