"""YODA masked training objective (eq. 10, docs/method.md §6).

Per sample: draw t, noise eps and the noisy state z_t of the target (image space for SR3, residual
space for SRDiff); the network sees M(t) * z_t (eq. 11) and the loss is the L1 error on eps inside
M(t), normalised by the number of active elements. With A = 1 this is exactly the plain SR3/SRDiff
L1 loss. For ResShift (``draw_shift``) the state is its forward marginal, the input is masked with the
known region y0 outside M(t) and the loss is the L1 error on x0 inside M(t) (docs/method.md §10).

The random part of a draw (t, sqrt(gamma), eps and so M(t)) does not depend on the target's values,
only on its shape, so it is drawn first (``draw_noise``) and the loss is evaluated on it
(``predict(...).l1_terms()``). ``diffusion_loss`` and the trainer both go this way; the trainer draws before the
forward pass because data-parallel training divides every rank's sum by the element count of the
whole global batch (``NoiseDraw.count``), which it must know before the first backward pass.
A list of generators, one per sample, makes each sample's draw independent of its batch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple, TypeVar

import torch
from torch import Tensor

from ..diffusion.masking import activation_steps
from ..diffusion.resshift import ResShiftSchedule, forward_marginal, input_scale, masked_input, noise_level
from ..diffusion.schedules import NoiseSchedule
from ..models.base import Condition, SRDenoiser

Generators = torch.Generator | Sequence[torch.Generator] | None
"""One generator for the batch, one per sample (the draws of sample i use only the i-th), or None."""


def active_elements(mask: Tensor | None, shape: Sequence[int]) -> Tensor:
    """sum(M) * C: how many elements of an N x C x H x W target the masked L1 counts (float32)."""
    if mask is None:
        return torch.tensor(float(math.prod(shape)))
    return mask.to(torch.float32).sum().detach() * (shape[1] // mask.shape[1])


def masked_l1_terms(target: Tensor, prediction: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """(sum(M * |target - prediction|), sum(M) * C): eq. 10's numerator and element count.

    Kept apart so that data-parallel training can divide by the count over all processes.
    """
    error = (target - prediction).abs()
    count = active_elements(mask, error.shape).to(error.device)
    if mask is None:
        return error.sum(), count
    return (error * mask.to(error.dtype)).sum(), count


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


@dataclass
class NoiseDraw:
    """The random part of a training draw, before it meets a target: t, sqrt(gamma_t), eps, M(t)."""

    t: Tensor
    noise_level: Tensor
    eps: Tensor
    mask: Tensor | None

    def count(self) -> Tensor:
        """The element count of eq. 10 for this draw (what ``masked_l1_terms`` returns with it)."""
        return active_elements(self.mask, self.eps.shape)

    def apply(self, z0: Tensor) -> NoisedBatch:
        """z_t = sqrt(gamma) * z0 + sqrt(1 - gamma) * eps, for targets of the drawn shape."""
        if z0.shape != self.eps.shape:
            raise ValueError(f"the noise was drawn for {tuple(self.eps.shape)}, the target is {tuple(z0.shape)}")
        level = self.noise_level.view(-1, 1, 1, 1)
        z = level * z0 + (1 - level**2).sqrt() * self.eps
        return NoisedBatch(z=z, t=self.t, noise_level=self.noise_level, eps=self.eps, mask=self.mask)


DrawT = TypeVar("DrawT", "NoiseDraw", "ShiftDraw")


def _per_sample(
    draw: Callable[..., DrawT],
    shape: Sequence[int],
    attention: Tensor | None,
    generators: Sequence[torch.Generator],
    device: torch.device | str,
) -> DrawT:
    """One draw per sample, each from its own generator, concatenated: a sample's draw does not
    depend on its batch (``draw`` takes shape, attention, generator and device)."""
    if len(generators) != shape[0]:
        raise ValueError(f"{len(generators)} generators for a batch of {shape[0]}")
    single = (1, *shape[1:])
    draws = [
        draw(single, attention=None if attention is None else attention[i : i + 1], generator=one, device=device)
        for i, one in enumerate(generators)
    ]
    values: dict[str, Any] = {}
    for field in fields(draws[0]):
        items = [getattr(one, field.name) for one in draws]
        values[field.name] = torch.cat(items) if isinstance(items[0], Tensor) else items[0]
    return type(draws[0])(**values)


def draw_noise(
    shape: Sequence[int],
    schedule: NoiseSchedule,
    *,
    continuous: bool,
    attention: Tensor | None = None,
    lower_bound: float = 0.2,
    generator: Generators = None,
    device: torch.device | str = "cpu",
) -> NoiseDraw:
    """Draw t, sqrt(gamma) and eps for targets of ``shape`` (N x C x H x W), and M(t) from ``attention``.

    ``continuous`` (SR3) draws sqrt(gamma) uniformly between sqrt(gamma_{t-1}) and sqrt(gamma_t), as
    SR3 trains on a continuous noise level; otherwise gamma = gamma_t exactly (SRDiff). Random
    numbers come from the CPU generator(s), in the order t, level, eps.
    """
    n = shape[0]
    if generator is not None and not isinstance(generator, torch.Generator):
        one = functools.partial(draw_noise, schedule=schedule, continuous=continuous, lower_bound=lower_bound)
        return _per_sample(one, shape, attention, generator, device)
    total = schedule.train_steps
    t = torch.randint(1, total + 1, (n,), generator=generator, device="cpu")
    gammas = schedule.gammas
    if continuous:
        low, high = gammas[t].sqrt(), gammas[t - 1].sqrt()
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        level = low + (high - low) * u
    else:
        level = gammas[t].sqrt()
    eps = torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(device)
    level = level.to(device=device, dtype=torch.float32)
    t = t.to(device)
    mask = None
    if attention is not None:
        mask = activation_steps(attention, lower_bound, total) >= t.view(n, 1, 1, 1)
    return NoiseDraw(t=t, noise_level=level, eps=eps, mask=mask)


@dataclass
class ShiftDraw:
    """The random part of a ResShift training draw: t, eta_t, eps and M(t) (docs/method.md §10)."""

    t: Tensor
    eta: Tensor
    kappa: float
    eps: Tensor
    mask: Tensor | None

    def count(self) -> Tensor:
        """The element count of the masked L1 for this draw."""
        return active_elements(self.mask, self.eps.shape)

    def network_input(self, x0: Tensor, y0: Tensor, mask_input: bool = True) -> Tensor:
        """x_t of the forward marginal, masked (y0 outside M(t)) and scaled as the sampler feeds it."""
        if x0.shape != self.eps.shape:
            raise ValueError(f"the noise was drawn for {tuple(self.eps.shape)}, the target is {tuple(x0.shape)}")
        eta = self.eta.view(-1, 1, 1, 1)
        x_t = forward_marginal(x0, y0, eta, self.kappa, self.eps)
        if self.mask is not None and mask_input:
            x_t = masked_input(x_t, y0, self.mask)
        return x_t * input_scale(eta, self.kappa)


def draw_shift(
    shape: Sequence[int],
    schedule: ResShiftSchedule,
    *,
    attention: Tensor | None = None,
    lower_bound: float = 0.2,
    generator: Generators = None,
    device: torch.device | str = "cpu",
) -> ShiftDraw:
    """Draw t uniformly from 1..T and eps for targets of ``shape``, and M(t) from ``attention``
    (random numbers from the CPU generator(s), t first; per sample with one generator each)."""
    n = shape[0]
    if generator is not None and not isinstance(generator, torch.Generator):
        one = functools.partial(draw_shift, schedule=schedule, lower_bound=lower_bound)
        return _per_sample(one, shape, attention, generator, device)
    total = schedule.train_steps
    t = torch.randint(1, total + 1, (n,), generator=generator, device="cpu")
    eps = torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(device)
    eta = schedule.etas[t].to(device=device, dtype=torch.float32)
    t = t.to(device)
    mask = None
    if attention is not None:
        mask = activation_steps(attention, lower_bound, total) >= t.view(n, 1, 1, 1)
    return ShiftDraw(t=t, eta=eta, kappa=schedule.kappa, eps=eps, mask=mask)


def draw(
    shape: Sequence[int],
    schedule: NoiseSchedule | ResShiftSchedule,
    *,
    continuous: bool,
    attention: Tensor | None = None,
    lower_bound: float = 0.2,
    generator: Generators = None,
    device: torch.device | str = "cpu",
) -> NoiseDraw | ShiftDraw:
    """The draw of the schedule's process: ``draw_shift`` for ResShift, else ``draw_noise``."""
    if isinstance(schedule, ResShiftSchedule):
        return draw_shift(
            shape, schedule, attention=attention, lower_bound=lower_bound, generator=generator, device=device
        )
    return draw_noise(
        shape,
        schedule,
        continuous=continuous,
        attention=attention,
        lower_bound=lower_bound,
        generator=generator,
        device=device,
    )


def noise_batch(
    z0: Tensor,
    schedule: NoiseSchedule,
    *,
    continuous: bool,
    attention: Tensor | None = None,
    lower_bound: float = 0.2,
    generator: Generators = None,
) -> NoisedBatch:
    """Draw t, eps and z_t = sqrt(gamma) * z0 + sqrt(1 - gamma) * eps for each sample (``draw_noise``)."""
    draw = draw_noise(
        z0.shape,
        schedule,
        continuous=continuous,
        attention=attention,
        lower_bound=lower_bound,
        generator=generator,
        device=z0.device,
    )
    return draw.apply(z0)


@dataclass
class Prediction:
    """The denoiser's output on one draw: what the L1 compares, and its one-step estimate of z_0."""

    target: Tensor
    """eps (DDPM) or z_0 (ResShift): what ``output`` is trained towards."""
    output: Tensor
    mask: Tensor | None
    z0: Tensor
    """The estimate of z_0 this output implies, clamped to [-1, 1]; the known region outside M(t)."""
    weight: Tensor
    """Per sample, how much a loss on ``z0`` counts: gamma_t for DDPM (the estimate's error is
    sqrt((1 - gamma) / gamma) times the output's, unbounded at high t), 1 for ResShift's x0 output."""

    def l1_terms(self) -> tuple[Tensor, Tensor]:
        """(numerator, element count) of eq. 10: ``masked_l1_terms`` of the output against its target."""
        return masked_l1_terms(self.target, self.output, self.mask)


def predict(
    model: SRDenoiser,
    hr: Tensor,
    cond: Condition,
    draw: NoiseDraw | ShiftDraw,
    *,
    mask_input: bool = True,
    denoise: Callable[[Tensor, Condition, Tensor, Tensor], Tensor] | None = None,
) -> Prediction:
    """The denoiser on a batch of HR images and a draw of their shape.

    The target z_0 (the HR image's shape in both spaces) is detached: with a trainable residual base
    (SRDiff's ``residual_base="rrdb"``) the diffusion models the residual of the base, it does not
    get to move the base. A ResShift draw makes the L1 of ``Prediction.l1_terms`` the masked L1 on
    x0 (docs/method.md §10). ``denoise`` replaces the model call (e.g. ``compiled.CompiledDenoiser``).
    """
    z0 = model.to_diffusion_space(hr, cond).detach().float()
    known = model.known_region(cond).detach().float()
    if isinstance(draw, ShiftDraw):
        x_in = draw.network_input(z0, known, mask_input)
        level = noise_level(draw.eta)
        assert isinstance(level, Tensor)  # draw.eta is a tensor: per-sample levels
        output = (denoise or model)(x_in, cond, draw.t, level).float()
        estimate = output.clamp(-1, 1)
        target = z0
        weight = torch.ones(output.shape[0], device=output.device)
    else:
        batch = draw.apply(z0)
        z_in = batch.z * batch.mask if batch.mask is not None and mask_input else batch.z
        output = (denoise or model)(z_in, cond, batch.t, batch.noise_level).float()
        level = batch.noise_level.view(-1, 1, 1, 1)
        estimate = ((batch.z - (1 - level**2).sqrt() * output) / level.clamp(min=1e-4)).clamp(-1, 1)
        target = batch.eps
        weight = batch.noise_level.float() ** 2
    if draw.mask is not None:
        estimate = torch.where(draw.mask, estimate, known)
    return Prediction(target=target, output=output, mask=draw.mask, z0=estimate, weight=weight)


class LossTerms(NamedTuple):
    """The sums a micro-batch adds to the loss (None: the term is off)."""

    total: Tensor
    """eq. 10's numerator: the masked L1 of the denoiser's output."""
    elements: Tensor
    """eq. 10's element count."""
    aux: Tensor | None
    """sum |base - HR| (``aux_l1``)."""
    perceptual: Tensor | None
    """Sum of LPIPS-VGG to the HR crops: of the z_0 estimates (weighted), or of the unrolled samples."""
    sample_l1: Tensor | None
    """sum |unrolled sample - HR| (``unroll_steps``)."""


def detached_base_image(model: SRDenoiser, cond: Condition, z0: Tensor) -> Tensor:
    """The image of a diffusion-space z_0, measured from a detached base: a loss on it trains the
    denoiser, not the regression base it adds to."""
    base = None if cond.base is None else cond.base.detach()
    return model.from_diffusion_space(z0, dataclasses.replace(cond, base=base))


def estimated_image(model: SRDenoiser, cond: Condition, prediction: Prediction) -> Tensor:
    """The image of a prediction's z_0 estimate (``detached_base_image``)."""
    return detached_base_image(model, cond, prediction.z0)


def base_l1_sum(hr: Tensor, cond: Condition) -> Tensor | None:
    """sum |base - HR| when the condition's residual base is the model's own output rather than
    x_up (SRDiff's aux L1 on its RRDB encoder), else None."""
    if cond.base is None or cond.base is cond.x_up:
        return None
    return (cond.base.float() - hr).abs().sum()


def diffusion_loss(
    model: SRDenoiser,
    hr: Tensor,
    cond: Condition,
    schedule: NoiseSchedule | ResShiftSchedule,
    *,
    attention: Tensor | None = None,
    lower_bound: float = 0.2,
    mask_input: bool = True,
    generator: Generators = None,
) -> Tensor:
    """The YODA masked L1 loss of a batch of HR images (plain SR3/SRDiff loss when attention is None):
    ``predict`` on a ``draw`` (ResShift's for a ResShift schedule), its L1 numerator over max(1, count)."""
    noise_draw = draw(
        hr.shape,
        schedule,
        continuous=model.conditioning == "noise_level",
        attention=attention,
        lower_bound=lower_bound,
        generator=generator,
        device=hr.device,
    )
    total, count = predict(model, hr, cond, noise_draw, mask_input=mask_input).l1_terms()
    return total / count.clamp(min=1)
