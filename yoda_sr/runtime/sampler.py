"""The reverse loop wired to a denoiser and its per-image condition: ``sample`` returns the HR image.

``diffusion.loop.reverse`` knows only functions and tensors; here a model's prepared ``Condition``
becomes its network call (``model_eps_fn``), its known region and its image space, and an attention
map becomes YODA's activation steps (``masking.activation_steps``, eq. 9).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..diffusion.loop import Generators, MaskedPredict, Predict, make_noise_sampler, reverse
from ..diffusion.masking import activation_steps, block_attention, update_fraction
from ..diffusion.process import NoiseSampler
from ..diffusion.processes import AnySchedule, make_process
from ..models.base import Condition, SRDenoiser


def model_eps_fn(model: SRDenoiser, cond: Condition, dtype: torch.dtype | None = None) -> Predict:
    """Wrap a denoiser and its prepared condition as the loop's network call on float32 states."""
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
    schedule: AnySchedule,
    *,
    sampler: str | None = None,
    eta: float = 0.0,
    attention: Tensor | None = None,
    lower_bound: float = 0.2,
    mask_input: bool = True,
    generator: Generators = None,
    noise: NoiseSampler | None = None,
    eps_fn: Predict | None = None,
    callback: Callable[[dict], None] | None = None,
    block: int = 0,
    masked_eps_fn: MaskedPredict | None = None,
    flat: Tensor | None = None,
) -> SampleResult:
    """Super-resolve a prepared condition; YODA-masked when an ``attention`` map (N x 1 x H x W) is given.

    ``schedule`` is the model's training schedule (of its process), respaced to the number of sampling
    steps; ``sampler`` (default: the process's first) and ``eta`` pick the process
    (``processes.make_process``). ``mask_input=False`` feeds the whole state to a model trained without
    YODA (docs/method.md §7). ``eps_fn`` replaces the plain model call (``model_eps_fn``), e.g. by a
    tiled one (``tiling.tiled_eps_fn``). ``block`` > 1 averages the map over blocks of that side first
    (``masking.block_attention``); ``masked_eps_fn`` evaluates only where M(t) is active
    (``sparse.Evaluator``, docs/method.md §11). ``flat`` (N x 1 x H x W bool, ``masking.flat_areas``)
    keeps the base where true, with ``attention``.
    """
    process = make_process(schedule, sampler, eta)
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
    z0 = reverse(
        process,
        eps_fn or model_eps_fn(model, cond),
        known,
        activation=activation,
        mask_input=mask_input,
        noise=noise or make_noise_sampler(generator),
        callback=callback,
        masked_predict=masked_eps_fn,
    )
    return SampleResult(image=model.from_diffusion_space(z0, cond), update_fraction=fraction, activation=activation)
