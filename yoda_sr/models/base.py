"""The contract every yoda-sr denoiser implements, and the descriptor it carries.

A denoiser predicts the noise epsilon of a noisy state ``z_t`` given a *condition* that is
computed once per image (``prepare``) and never inside the sampling loop. Diffusion runs either in
image space (SR3: ``z_0`` is the HR image) or in residual space (SRDiff: ``z_0 = (HR - base) * 2``).
The space decides what the "known region" of YODA sampling is (docs/method.md §7).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

Space = Literal["image", "residual"]

UPSTREAM_DIFFUSION_BUFFERS: tuple[str, ...] = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)
"""Unprefixed schedule buffers that the DDPM wrappers of both upstreams (Janspiry's SR3 and
LeiaLi's SRDiff) register next to the network: not model weights (yoda-sr keeps the schedule as a
``ScheduleSpec``); an importer drops them or checks them against the schedule."""


@dataclass(frozen=True)
class ModelInfo:
    """What a caller needs to know to run a denoiser (in the spirit of spandrel's descriptors)."""

    arch: str
    scale: int
    in_channels: int
    out_channels: int
    space: Space
    size_multiple: int
    """HR height and width must be multiples of this (the UNet's total downsampling)."""
    supported_dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16)
    lr_size: int | None = None
    hr_size: int | None = None
    """Fixed training sizes of face models (informative; any multiple of size_multiple runs)."""


@dataclass
class Condition:
    """Everything about the LR image a denoiser needs, computed once per image.

    ``x_up`` is the bicubic upscale of the LR image (HR size, [-1, 1]). ``base`` is the image the
    residual is measured from (residual space only; ``x_up`` unless the model says otherwise).
    ``features`` holds model-specific tensors; all of them are laid out N x C x H x W at HR size so
    that a tiler can crop every entry of a condition with the same window.
    """

    x_up: Tensor
    base: Tensor | None = None
    features: dict[str, Tensor] = field(default_factory=dict)

    def crop(self, top: int, left: int, height: int, width: int) -> Condition:
        """The same condition restricted to an HR window (for tiled sampling)."""
        window = (slice(None), slice(None), slice(top, top + height), slice(left, left + width))
        return Condition(
            x_up=self.x_up[window],
            base=None if self.base is None else self.base[window],
            features={name: value[window] for name, value in self.features.items()},
        )

    def to(self, *args, **kwargs) -> Condition:
        """The condition with every tensor moved or cast, as ``Tensor.to`` does."""
        return Condition(
            x_up=self.x_up.to(*args, **kwargs),
            base=None if self.base is None else self.base.to(*args, **kwargs),
            features={name: value.to(*args, **kwargs) for name, value in self.features.items()},
        )

    def select(self, index: Tensor | slice) -> Condition:
        """The condition of a subset of the batch."""
        return Condition(
            x_up=self.x_up[index],
            base=None if self.base is None else self.base[index],
            features={name: value[index] for name, value in self.features.items()},
        )


class SRDenoiser(nn.Module, ABC):
    """Base class of conditional epsilon-prediction networks for super-resolution.

    Subclasses set ``arch`` and ``space``, keep their hyperparameters in ``self.config`` (a JSON-able
    dict that ``from_config`` accepts back) and implement ``prepare`` and ``forward``.
    """

    arch: ClassVar[str]
    space: ClassVar[Space]
    conditioning: ClassVar[Literal["noise_level", "step"]]
    """What the network is conditioned on: the continuous sqrt(gamma_t) (SR3) or the step t (SRDiff)."""

    config: dict[str, Any]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SRDenoiser:
        return cls(**config)

    @property
    @abstractmethod
    def info(self) -> ModelInfo:
        """The model's descriptor."""

    @abstractmethod
    def prepare(self, lr: Tensor, x_up: Tensor) -> Condition:
        """Compute the per-image condition from the LR image and its bicubic upscale (both [-1, 1])."""

    @abstractmethod
    def forward(self, z: Tensor, cond: Condition, t: Tensor, noise_level: Tensor) -> Tensor:
        """Predict epsilon from ``z`` (N x 3 x H x W).

        ``t`` (int64, shape N) is the training-step number 1..T of the current state and
        ``noise_level`` (float, shape N) is sqrt(gamma_t); each architecture uses the one it was
        trained with.
        """

    # --- diffusion space ------------------------------------------------------------------------

    def to_diffusion_space(self, hr: Tensor, cond: Condition) -> Tensor:
        """The training target z_0 for an HR image (docs/method.md §3)."""
        if self.space == "image":
            return hr
        assert cond.base is not None
        return ((hr - cond.base) * 2).clamp(-1, 1)

    def from_diffusion_space(self, z0: Tensor, cond: Condition) -> Tensor:
        """The image for a sampled z_0, clamped to [-1, 1]."""
        if self.space == "image":
            return z0.clamp(-1, 1)
        assert cond.base is not None
        return (cond.base + z0 / 2).clamp(-1, 1)

    def known_region(self, cond: Condition) -> Tensor:
        """x0 of the region YODA leaves undiffused: x_up in image space, 0 in residual space."""
        if self.space == "image":
            return cond.x_up
        return torch.zeros_like(cond.x_up)
