"""The image a model's sampler returns, as a differentiable function of its weights: what the
unrolled training terms compare (``unroll_steps``, docs/method.md §6)."""

from __future__ import annotations

from torch import Tensor

from ..diffusion.ddpm import DDPM
from ..diffusion.loop import make_noise_sampler, reverse
from ..diffusion.masking import activation_steps, block_attention
from ..diffusion.schedules import NoiseSchedule
from ..models.base import Condition, SRDenoiser
from ..runtime.sampler import model_eps_fn
from .objective import Generators, detached_base_image


def unrolled_image(
    model: SRDenoiser,
    cond: Condition,
    schedule: NoiseSchedule,
    steps: int,
    *,
    attention: Tensor | None = None,
    lower_bound: float = 0.2,
    block: int = 0,
    generator: Generators = None,
) -> Tensor:
    """The image that ``steps`` DDPM steps of ``loop.reverse`` make, with gradients through every
    step (docs/method.md §6): what ``upscale`` returns for this condition, as a function of the weights.

    YODA-masked with ``attention`` (N x 1 x H x W) at ``lower_bound``, averaged over ``block`` px blocks
    first as the sampler's block-sparse path does; ``None`` is plain sampling. The noise comes from
    ``generator`` (one per sample makes a sample's chain independent of its batch). As in
    ``detached_base_image`` the base is detached: a loss on this image trains the denoiser only.
    """
    respaced = schedule.respace(steps)
    activation = None
    if attention is not None:
        activation = activation_steps(block_attention(attention, block), lower_bound, schedule.train_steps)
    z0 = reverse(
        DDPM(respaced),
        model_eps_fn(model, cond),
        model.known_region(cond).detach(),
        activation=activation,
        noise=make_noise_sampler(generator),
    )
    return detached_base_image(model, cond, z0)
