"""Ancestral DDPM and DDIM sampling, plain and YODA-masked (eqs. 11-14, docs/method.md §7).

``sample_z0`` is the loop: a pure function of an epsilon predictor, the known region, a schedule
and a noise source. ``sample`` wires it to a denoiser and its per-image condition and returns the
HR image. Per step t -> t-1 with mask M(t):

    z_tilde = M(t) * z_t                               (eq. 11; z_t itself if mask_input is off)
    z_sr    = DDPM or DDIM update of z_t with eps = f(z_tilde, t)         (eq. 12)
    z_lr    = sqrt(gamma_{t-1}) * x0_known + sqrt(1 - gamma_{t-1}) * eps' (eq. 13, fresh eps')
    z_{t-1} = M(t) * z_sr + (1 - M(t)) * z_lr                              (eq. 14)

Steps at which every pixel is active draw no eps' and blend nothing, so with A = 1 masked sampling
is plain sampling, bit for bit. A step at which no pixel is active makes no model call: its eps would
be discarded. Where some pixels are active, a ``masked_eps_fn`` (``sparse.Evaluator.masked``) is
told M(t) and may evaluate only there (docs/method.md §11). All coefficients are computed on the host
before the loop; the loop makes at most one model call per step and, densely, no host/device transfer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from ..models.base import Condition, SRDenoiser
from .masking import activation_steps, block_attention, time_mask, update_fraction
from .schedules import NoiseSchedule

if TYPE_CHECKING:
    from .resshift import ResShiftSchedule

SamplerName = Literal["ddpm", "ddim"]
EpsFunction = Callable[[Tensor, Tensor, Tensor], Tensor]
"""(z, t as int64 N, sqrt(gamma_t) as float N) -> predicted epsilon, in float32."""
MaskedEpsFunction = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""(z, t, sqrt(gamma_t), M(t) as bool N x 1 x H x W) -> epsilon, which is read only where M(t) is true."""
NoiseSampler = Callable[[Tensor], Tensor]
"""Returns standard normal noise with the shape, dtype and device of its argument."""
Generators = torch.Generator | Sequence[torch.Generator] | None


def make_noise_sampler(generator: Generators = None) -> NoiseSampler:
    """Noise from one generator, or from one generator per batch item.

    Noise is drawn on the generator's device and moved to the state's, so a CPU generator gives the
    same noise whatever device samples. With one generator per item an image's noise does not
    depend on what else is in its batch.
    """
    if generator is None:

        def draw_here(like: Tensor) -> Tensor:
            return torch.randn(like.shape, device=like.device, dtype=like.dtype)

        return draw_here

    if isinstance(generator, torch.Generator):
        single = generator

        def draw(like: Tensor) -> Tensor:
            noise = torch.randn(like.shape, generator=single, device=single.device, dtype=like.dtype)
            return noise.to(like.device)

        return draw

    generators = list(generator)

    def draw_per_item(like: Tensor) -> Tensor:
        if len(generators) != like.shape[0]:
            raise ValueError(f"{len(generators)} generators for a batch of {like.shape[0]}")
        items = [torch.randn(like.shape[1:], generator=g, device=g.device, dtype=like.dtype) for g in generators]
        return torch.stack(items).to(like.device)

    return draw_per_item


@dataclass(frozen=True)
class _Step:
    """Host-side constants of one step from visited index k to k - 1."""

    index: int
    t: int
    gamma: float
    gamma_prev: float
    coef_x0: float
    coef_z: float
    sigma: float


def _plan(schedule: NoiseSchedule, sampler: SamplerName, eta: float) -> list[_Step]:
    if sampler not in ("ddpm", "ddim"):
        raise ValueError(f"unknown sampler {sampler!r}: use 'ddpm' or 'ddim'")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    gammas = schedule.step_gammas.tolist()
    steps = schedule.steps.tolist()
    plan = []
    for k in range(schedule.num_steps, 0, -1):
        g, gp = gammas[k], gammas[k - 1]
        if sampler == "ddpm":
            beta = 1 - g / gp
            # Posterior q(z_{t-1} | z_t, x0): mean coefficients and standard deviation.
            coef_x0 = math.sqrt(gp) * beta / (1 - g)
            coef_z = math.sqrt(1 - beta) * (1 - gp) / (1 - g)
            sigma = math.sqrt(beta * (1 - gp) / (1 - g))
        else:
            sigma = eta * math.sqrt((1 - gp) / (1 - g) * (1 - g / gp))
            coef_x0 = math.sqrt(gp)
            coef_z = math.sqrt(max(1 - gp - sigma**2, 0.0))  # multiplies eps re-derived from x0
        plan.append(_Step(k, steps[k], g, gp, coef_x0, coef_z, sigma))
    return plan


def sample_z0(
    eps_fn: EpsFunction,
    known: Tensor,
    schedule: NoiseSchedule,
    *,
    sampler: SamplerName = "ddpm",
    eta: float = 0.0,
    activation: Tensor | None = None,
    mask_input: bool = True,
    noise: NoiseSampler | None = None,
    callback: Callable[[dict], None] | None = None,
    masked_eps_fn: MaskedEpsFunction | None = None,
) -> Tensor:
    """Run the reverse process and return z_0 (diffusion space, float32).

    ``known`` is x0 of the region YODA leaves undiffused (x_up for SR3, zeros in SRDiff's residual
    space); it also fixes the output shape and device. ``activation`` (int64, N x 1 x H x W, from
    ``masking.activation_steps``) switches YODA masking on; ``None`` is plain sampling. At steps with
    a known region, ``masked_eps_fn`` (if given) replaces ``eps_fn`` and is told M(t).
    """
    noise = noise or make_noise_sampler()
    known = known.float()
    device, batch = known.device, known.shape[0]
    plan = _plan(schedule, sampler, eta)
    steps_on_device = schedule.steps.to(device)
    levels_on_device = schedule.step_gammas.sqrt().to(device=device, dtype=torch.float32)
    # Up to always_active every pixel is active (no known region); above most_active none is (no model
    # call). Two syncs, before the loop.
    always_active = schedule.train_steps if activation is None else int(activation.min())
    most_active = schedule.train_steps if activation is None else int(activation.max())

    g_start = plan[0].gamma
    z = math.sqrt(g_start) * known + math.sqrt(1 - g_start) * noise(known)
    for step in plan:
        masked = activation is not None and step.t > always_active
        active = time_mask(activation, step.t) if activation is not None and masked else None
        z_in = z * active if active is not None and mask_input else z
        t = steps_on_device[step.index].expand(batch)
        level = levels_on_device[step.index].expand(batch)
        if active is None:
            eps = eps_fn(z_in, t, level)
        elif step.t > most_active:  # no pixel is active: every eps would be discarded
            eps = torch.zeros_like(z)
        elif masked_eps_fn is not None:
            eps = masked_eps_fn(z_in, t, level, active)
        else:
            eps = eps_fn(z_in, t, level)

        x0 = ((z - math.sqrt(1 - step.gamma) * eps) / math.sqrt(step.gamma)).clamp(-1, 1)
        if sampler == "ddpm":
            z_next = step.coef_x0 * x0 + step.coef_z * z
        else:
            eps_x0 = (z - math.sqrt(step.gamma) * x0) / math.sqrt(1 - step.gamma)
            z_next = step.coef_x0 * x0 + step.coef_z * eps_x0
        if step.sigma > 0 and step.gamma_prev < 1:
            z_next = z_next + step.sigma * noise(z)

        if active is not None:
            g_prev = step.gamma_prev
            z_known = math.sqrt(g_prev) * known + math.sqrt(1 - g_prev) * noise(z)
            z_next = torch.where(active, z_next, z_known)
        z = z_next
        if callback is not None:
            callback({"index": step.index, "t": step.t, "z": z, "x0": x0, "eps": eps, "active": active})
    return z


def model_eps_fn(model: SRDenoiser, cond: Condition, dtype: torch.dtype | None = None) -> EpsFunction:
    """Wrap a denoiser and its prepared condition as an epsilon function on float32 states."""
    dtype = dtype or next(model.parameters()).dtype
    cond = cond.to(dtype)

    def eps_fn(z: Tensor, t: Tensor, level: Tensor) -> Tensor:
        return model(z.to(dtype), cond, t, level.to(dtype)).float()

    return eps_fn


@dataclass
class SampleResult:
    """The HR image of a run and what it cost."""

    image: Tensor
    """N x 3 x H x W in [-1, 1], float32."""
    update_fraction: float
    """Pixel updates relative to plain diffusion on the same steps (1.0 for plain sampling)."""
    activation: Tensor | None = None
    """The activation steps of the mask used (N x 1 x H x W, block-pooled when ``block`` > 1), or None."""


@torch.inference_mode()
def sample(
    model: SRDenoiser,
    cond: Condition,
    schedule: NoiseSchedule | ResShiftSchedule,
    *,
    sampler: SamplerName = "ddpm",
    eta: float = 0.0,
    attention: Tensor | None = None,
    lower_bound: float = 0.2,
    mask_input: bool = True,
    generator: Generators = None,
    noise: NoiseSampler | None = None,
    eps_fn: EpsFunction | None = None,
    callback: Callable[[dict], None] | None = None,
    block: int = 0,
    masked_eps_fn: MaskedEpsFunction | None = None,
    flat: Tensor | None = None,
) -> SampleResult:
    """Super-resolve a prepared condition; YODA-masked when an ``attention`` map (N x 1 x H x W) is given.

    ``schedule`` is the model's training schedule, respaced to the number of sampling steps.
    ``mask_input=False`` feeds the whole z_t to a model trained without YODA (docs/method.md §7).
    ``eps_fn`` replaces the plain model call (``model_eps_fn``), e.g. by a tiled one
    (``tiling.tiled_eps_fn``) for images larger than memory allows. ``block`` > 1 averages the map
    over blocks of that side first (``masking.block_attention``); ``masked_eps_fn`` evaluates eps
    only where M(t) is active (``sparse.Evaluator``, docs/method.md §11). ``flat`` (N x 1 x H x W
    bool, ``masking.flat_areas``) keeps the base where true, with ``attention``. A ResShift schedule runs
    ResShift's chain instead (``resshift.sample``; ``sampler`` and ``eta`` do not apply).
    """
    if not isinstance(schedule, NoiseSchedule):
        from .resshift import sample as resshift_sample

        return resshift_sample(
            model, cond, schedule, attention=None if attention is None else block_attention(attention, block),
            lower_bound=lower_bound, mask_input=mask_input, generator=generator, noise=noise, eps_fn=eps_fn,
            callback=callback, masked_eps_fn=masked_eps_fn, flat=flat,
        )  # fmt: skip
    known = model.known_region(cond)
    activation = None
    fraction = 1.0
    if attention is not None:
        if attention.shape[-2:] != known.shape[-2:]:
            raise ValueError(
                f"attention map of size {tuple(attention.shape[-2:])} does not match the output "
                f"size {tuple(known.shape[-2:])}"
            )
        activation = activation_steps(block_attention(attention, block), lower_bound, schedule.train_steps, flat)
        fraction = update_fraction(activation, schedule.steps)
    z0 = sample_z0(
        eps_fn or model_eps_fn(model, cond),
        known,
        schedule,
        sampler=sampler,
        eta=eta,
        activation=activation,
        mask_input=mask_input,
        noise=noise or make_noise_sampler(generator),
        callback=callback,
        masked_eps_fn=masked_eps_fn,
    )
    return SampleResult(image=model.from_diffusion_space(z0, cond), update_fraction=fraction, activation=activation)
