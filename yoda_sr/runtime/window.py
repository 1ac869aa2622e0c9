"""One window of an image super-resolved: the pipeline whole-image and streamed sampling share.

A window is the whole padded LR image (``whole``) or one tile of it with context (``streaming``).
For each: the condition x_up by the model's recipe and ``model.prepare`` (``condition``), then the
sampler over a ``sparse.Evaluator`` (``sample_window``). What differs between the two is only where
the window's attention map and noise come from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..diffusion.process import NoiseSampler
from ..diffusion.processes import AnySchedule
from ..image.conditioning import upscale_condition
from ..models.base import Condition, SRDenoiser
from .sampler import SampleResult, sample
from .sparse import Evaluator
from .tiling import Denoise


@dataclass(frozen=True)
class SamplingSpec:
    """How every window of a run is sampled: the resolved settings and the model's recipe."""

    schedule: AnySchedule
    """The model's training schedule, respaced to the sampling steps."""
    sampler: str
    eta: float
    attention: str
    lower_bound: float
    mask_input: bool
    """Whether the network sees M(t) * z_t (a YODA-trained model) or z_t (docs/method.md §7)."""
    dtype: torch.dtype
    x_up: str = "bicubic"
    """The model's condition recipe (``conditioning``)."""
    sparse: bool = False
    """Evaluate the denoiser on the active blocks only (``sparse.Evaluator``)."""
    block: int = 0
    """HR side of the blocks the map is averaged over, anchored at the image's origin (0: pixel-level)."""
    denoise: Denoise | None = None
    """How the denoiser is called (``tiling.Denoise``: e.g. compiled); None: the model itself."""
    flat_floor: float = 0.0
    """With an attention map, LR areas with less detail than this keep the base (``masking.flat_areas``)."""


@dataclass
class Upscaled:
    """One image as a sampling path returns it."""

    image: np.ndarray
    """H x W x 3, the input's dtype."""
    attention: np.ndarray | None
    """The map used: at HR size for whole-image sampling, at LR size when streamed; None without YODA."""
    update_fraction: float
    work_fraction: float
    """Pixels the denoiser evaluated (halos and tile overlaps included) / (steps x image pixels)."""


def condition(model: SRDenoiser, lr: Tensor, hr_size: tuple[int, int], spec: SamplingSpec) -> Condition:
    """The window's condition (float32), its x_up built as the model's training data was."""
    x_up = upscale_condition(lr, hr_size, spec.x_up)
    cond = model.prepare(lr.to(spec.dtype), x_up.to(spec.dtype)).to(torch.float32)
    cond.x_up = x_up
    return cond


def sample_window(
    model: SRDenoiser,
    cond: Condition,
    spec: SamplingSpec,
    evaluator: Evaluator,
    *,
    attention: Tensor | None,
    flat: Tensor | None,
    noise: NoiseSampler,
    callback: Callable[[dict], None],
    block: int = 0,
) -> SampleResult:
    """Run the sampler on one window through ``evaluator`` (dense, or masked with ``spec.sparse``);
    ``block`` > 1 pools ``attention`` first (a streamed tile's map comes pooled already)."""
    return sample(
        model,
        cond,
        spec.schedule,
        sampler=spec.sampler,
        eta=spec.eta,
        attention=attention,
        lower_bound=spec.lower_bound,
        mask_input=spec.mask_input,
        noise=noise,
        eps_fn=evaluator.dense,
        masked_eps_fn=evaluator.masked if spec.sparse else None,
        block=block,
        callback=callback,
        flat=flat,
    )
