"""YODA masked training objective (eq. 10, METHOD.md §6).

Per sample: draw t, noise eps and the noisy state z_t of the target (image space for SR3, residual
space for SRDiff); the network sees M(t) * z_t (eq. 11) and the loss is the L1 error on eps inside
M(t), normalised by the number of active elements. With A = 1 this is exactly the plain SR3/SRDiff
L1 loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .masking import activation_steps
from .models.base import Condition, SRDenoiser
from .schedules import NoiseSchedule


def masked_l1_terms(target: Tensor, prediction: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """(sum(M * |target - prediction|), sum(M) * C): eq. 10's numerator and element count.

    Kept apart so that data-parallel training can divide by the count over all processes.
    """
    error = (target - prediction).abs()
    if mask is None:
        return error.sum(), torch.tensor(float(error.numel()), device=error.device)
    mask = mask.to(error.dtype)
    channels = error.shape[1] // mask.shape[1]
    return (error * mask).sum(), mask.sum().detach() * channels


def masked_l1(target: Tensor, prediction: Tensor, mask: Tensor | None) -> Tensor:
    """sum(M * |target - prediction|) / max(1, sum(M) * C) (eq. 10); plain mean L1 without a mask."""
    if mask is None:
        return (target - prediction).abs().mean()
    total, count = masked_l1_terms(target, prediction, mask)
    return total / count.clamp(min=1)


@dataclass
class NoisedBatch:
    """One training draw: the noisy state, what the network is conditioned on, and the noise."""

    z: Tensor
    t: Tensor
    noise_level: Tensor
    eps: Tensor
    mask: Tensor | None


def noise_batch(
    z0: Tensor,
    schedule: NoiseSchedule,
    *,
    continuous: bool,
    attention: Tensor | None = None,
    lower_bound: float = 0.2,
    generator: torch.Generator | None = None,
) -> NoisedBatch:
    """Draw t, eps and z_t = sqrt(gamma) * z0 + sqrt(1 - gamma) * eps for each sample.

    ``continuous`` (SR3) draws sqrt(gamma) uniformly between sqrt(gamma_{t-1}) and sqrt(gamma_t), as
    SR3 trains on a continuous noise level; otherwise gamma = gamma_t exactly (SRDiff).
    """
    n, device = z0.shape[0], z0.device
    total = schedule.train_steps
    t = torch.randint(1, total + 1, (n,), generator=generator, device="cpu")
    gammas = schedule.gammas
    if continuous:
        low, high = gammas[t].sqrt(), gammas[t - 1].sqrt()
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        level = low + (high - low) * u
    else:
        level = gammas[t].sqrt()
    eps = torch.randn(z0.shape, generator=generator, dtype=torch.float32).to(device)
    level = level.to(device=device, dtype=torch.float32)
    t = t.to(device)
    shape = (n, 1, 1, 1)
    z = level.view(shape) * z0 + (1 - level.view(shape) ** 2).sqrt() * eps
    mask = None
    if attention is not None:
        mask = activation_steps(attention, lower_bound, total) >= t.view(shape)
    return NoisedBatch(z=z, t=t, noise_level=level, eps=eps, mask=mask)


def diffusion_loss(
    model: SRDenoiser,
    hr: Tensor,
    cond: Condition,
    schedule: NoiseSchedule,
    *,
    attention: Tensor | None = None,
    lower_bound: float = 0.2,
    mask_input: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The YODA masked L1 loss of a batch of HR images (plain SR3/SRDiff loss when attention is None).

    The target z_0 is detached: with a trainable residual base (SRDiff's ``residual_base="rrdb"``)
    the diffusion models the residual of the base, it does not get to move the base.
    """
    z0 = model.to_diffusion_space(hr, cond).detach()
    batch = noise_batch(
        z0,
        schedule,
        continuous=model.conditioning == "noise_level",
        attention=attention,
        lower_bound=lower_bound,
        generator=generator,
    )
    z_in = batch.z * batch.mask if batch.mask is not None and mask_input else batch.z
    prediction = model(z_in, cond, batch.t, batch.noise_level)
    return masked_l1(batch.eps, prediction.float(), batch.mask)
