"""SR3: a UNet that predicts epsilon from concat(x_up, z_t), conditioned on the noise level.

The module tree follows the layout of Janspiry's SR3 implementation
(``Image-Super-Resolution-via-Iterative-Refinement``, ``model/sr3_modules/unet.py``) name for name
and shape for shape, so that an upstream ``*_gen.pth`` state dict loads with ``strict=True`` once
its ``denoise_fn.`` prefix is stripped and the diffusion buffers are dropped, and the forward pass
repeats upstream's computation (docs/method.md §3). The code is written for yoda-sr; only the state-dict
layout is shared.

Upstream layout, for reference (``C`` = inner_channel):

- ``noise_level_mlp.{1,3}``: Linear(C, 4C), SiLU, Linear(4C, C) after a parameter-free sinusoidal
  encoding at index 0;
- ``downs.0``: the input Conv2d; then per level ``res_blocks`` residual blocks and, except on the
  last level, a strided-conv ``Downsample`` (``downs.N.conv``);
- ``mid.0`` (residual block with attention), ``mid.1`` (without);
- ``ups``: per level, from the coarsest, ``res_blocks + 1`` residual blocks taking the skip
  connection and, except on the finest level, a nearest-neighbour ``Upsample`` (``ups.N.conv``);
- ``final_conv.block.{0,3}``: GroupNorm, SiLU, Conv2d to the output channels.

A residual block ``*.res_block`` holds ``noise_func.noise_func.0`` (the Linear adding the noise
embedding per channel), ``block1.block.{0,3}`` and ``block2.block.{0,3}`` (GroupNorm + Conv2d;
dropout sits at index 2 of ``block2``), and ``res_conv`` (1x1 Conv2d when the channel count
changes); with attention, ``*.attn`` holds ``norm``, ``qkv`` (no bias) and ``out``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import register_arch
from .base import Condition, ModelInfo, SRDenoiser

UPSTREAM_PREFIX = "denoise_fn."
"""Prefix of the UNet's keys in an upstream ``*_gen.pth`` (the UNet is ``GaussianDiffusion.denoise_fn``)."""


class NoiseLevelEncoding(nn.Module):
    """Sinusoidal encoding of the continuous noise level sqrt(gamma) (WaveGrad's formula).

    Computed in float32 whatever the input dtype: ``[sin(l * f_k), cos(l * f_k)]`` with
    ``f_k = exp(-ln(1e4) * k / (dim / 2))``, k = 0 .. dim/2 - 1.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, noise_level: Tensor) -> Tensor:
        half = self.dim // 2
        level = noise_level.to(torch.float32)
        exponents = torch.arange(half, dtype=torch.float32, device=level.device) / half
        angles = level.unsqueeze(1) * torch.exp(-math.log(1e4) * exponents.unsqueeze(0))
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class NoiseShift(nn.Module):
    """Adds a per-channel projection of the noise embedding to a feature map."""

    def __init__(self, embed_dim: int, channels: int) -> None:
        super().__init__()
        self.noise_func = nn.Sequential(nn.Linear(embed_dim, channels))

    def forward(self, features: Tensor, embedding: Tensor) -> Tensor:
        return features + self.noise_func(embedding).view(features.shape[0], -1, 1, 1)


class NormActConv(nn.Module):
    """GroupNorm, SiLU, optional dropout, 3x3 convolution."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.GroupNorm(groups, in_channels),
            nn.SiLU(),
            nn.Dropout(dropout) if dropout != 0 else nn.Identity(),
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class ResidualUnit(nn.Module):
    """Two NormActConv layers with the noise embedding added between them, plus a skip path."""

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int | None, groups: int, dropout: float) -> None:
        super().__init__()
        self.noise_func = NoiseShift(embed_dim, out_channels) if embed_dim is not None else None
        self.block1 = NormActConv(in_channels, out_channels, groups)
        self.block2 = NormActConv(out_channels, out_channels, groups, dropout=dropout)
        self.res_conv = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, embedding: Tensor | None) -> Tensor:
        h = self.block1(x)
        if self.noise_func is not None:
            h = self.noise_func(h, embedding)
        h = self.block2(h)
        return h + self.res_conv(x)


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over all positions, scaled by 1/sqrt(channels), with a residual.

    Upstream's maths through the fused kernel, which keeps memory linear in the number of positions
    where the backend allows; it differs from upstream's einsum only by float rounding (~1e-6).
    """

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=False)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        tokens = self.qkv(self.norm(x)).flatten(2).transpose(1, 2)
        query, key, value = tokens.unsqueeze(1).chunk(3, dim=-1)
        attended = F.scaled_dot_product_attention(query, key, value, scale=1.0 / math.sqrt(channels))
        attended = attended.squeeze(1).transpose(1, 2).reshape(batch, channels, height, width)
        return self.out(attended) + x


class ResAttnBlock(nn.Module):
    """A residual unit, optionally followed by self-attention."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        embed_dim: int | None,
        groups: int,
        dropout: float,
        with_attn: bool,
    ) -> None:
        super().__init__()
        self.res_block = ResidualUnit(in_channels, out_channels, embed_dim, groups, dropout)
        self.attn = SpatialSelfAttention(out_channels, groups) if with_attn else None

    def forward(self, x: Tensor, embedding: Tensor | None) -> Tensor:
        x = self.res_block(x, embedding)
        if self.attn is not None:
            x = self.attn(x)
        return x


class Downsample(nn.Module):
    """Halves the resolution with a stride-2 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Doubles the resolution (nearest neighbour), then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


@register_arch
class SR3UNet(SRDenoiser):
    """SR3's epsilon-prediction UNet in image space, conditioned on sqrt(gamma).

    Hyperparameters are upstream's (``channel_mults`` is its config's ``channel_multiplier``);
    ``image_size`` is the HR training size, which decides the levels that get attention
    (``attn_res`` lists resolutions in pixels at that size). ``scale`` is the SR factor and only
    informs ``info``. ``with_noise_level_emb=False`` drops the noise embedding and every
    ``noise_func`` (upstream cannot build that variant, so no upstream checkpoint uses it).
    """

    arch = "sr3"
    space = "image"
    conditioning = "noise_level"

    def __init__(
        self,
        *,
        scale: int,
        in_channel: int = 6,
        out_channel: int = 3,
        inner_channel: int = 32,
        norm_groups: int = 32,
        channel_mults: Sequence[int] = (1, 2, 4, 8, 8),
        attn_res: Sequence[int] | int = (8,),
        res_blocks: int = 3,
        dropout: float = 0.0,
        with_noise_level_emb: bool = True,
        image_size: int = 128,
    ) -> None:
        super().__init__()
        if isinstance(attn_res, int):
            attn_res = [attn_res]
        channel_mults = [int(mult) for mult in channel_mults]
        attn_res = [int(res) for res in attn_res]
        if not channel_mults:
            raise ValueError("channel_mults needs at least one level")
        if in_channel <= out_channel:
            raise ValueError(f"in_channel ({in_channel}) must hold the condition and z ({out_channel} channels)")
        self.config: dict[str, Any] = {
            "scale": int(scale),
            "in_channel": int(in_channel),
            "out_channel": int(out_channel),
            "inner_channel": int(inner_channel),
            "norm_groups": int(norm_groups),
            "channel_mults": channel_mults,
            "attn_res": attn_res,
            "res_blocks": int(res_blocks),
            "dropout": float(dropout),
            "with_noise_level_emb": bool(with_noise_level_emb),
            "image_size": int(image_size),
        }

        embed_dim: int | None = None
        self.noise_level_mlp: nn.Sequential | None = None
        if with_noise_level_emb:
            embed_dim = inner_channel
            self.noise_level_mlp = nn.Sequential(
                NoiseLevelEncoding(inner_channel),
                nn.Linear(inner_channel, inner_channel * 4),
                nn.SiLU(),
                nn.Linear(inner_channel * 4, inner_channel),
            )

        def res_attn_block(in_channels: int, out_channels: int, with_attn: bool) -> ResAttnBlock:
            return ResAttnBlock(
                in_channels,
                out_channels,
                embed_dim=embed_dim,
                groups=norm_groups,
                dropout=dropout,
                with_attn=with_attn,
            )

        channels = inner_channel
        skip_channels = [channels]
        resolution = image_size
        downs: list[nn.Module] = [nn.Conv2d(in_channel, inner_channel, kernel_size=3, padding=1)]
        for level, mult in enumerate(channel_mults):
            level_channels = inner_channel * mult
            for _ in range(res_blocks):
                downs.append(res_attn_block(channels, level_channels, resolution in attn_res))
                skip_channels.append(level_channels)
                channels = level_channels
            if level != len(channel_mults) - 1:
                downs.append(Downsample(channels))
                skip_channels.append(channels)
                resolution //= 2
        self.downs = nn.ModuleList(downs)

        self.mid = nn.ModuleList([res_attn_block(channels, channels, True), res_attn_block(channels, channels, False)])

        ups: list[nn.Module] = []
        for level in reversed(range(len(channel_mults))):
            level_channels = inner_channel * channel_mults[level]
            for _ in range(res_blocks + 1):
                skip = skip_channels.pop()
                ups.append(res_attn_block(channels + skip, level_channels, resolution in attn_res))
                channels = level_channels
            if level != 0:
                ups.append(Upsample(channels))
                resolution *= 2
        self.ups = nn.ModuleList(ups)

        self.final_conv = NormActConv(channels, out_channel, norm_groups)

    @property
    def info(self) -> ModelInfo:
        config = self.config
        return ModelInfo(
            arch=self.arch,
            scale=config["scale"],
            in_channels=config["in_channel"] - config["out_channel"],
            out_channels=config["out_channel"],
            space=self.space,
            size_multiple=2 ** (len(config["channel_mults"]) - 1),
            lr_size=config["image_size"] // config["scale"],
            hr_size=config["image_size"],
        )

    def prepare(self, lr: Tensor, x_up: Tensor) -> Condition:
        """SR3 conditions on the bicubic upscale alone, by concatenation."""
        return Condition(x_up=x_up)

    def forward(self, z: Tensor, cond: Condition, t: Tensor, noise_level: Tensor) -> Tensor:
        """Predict epsilon from ``z`` and ``cond.x_up``; ``noise_level`` (N or N x 1) is sqrt(gamma)."""
        x = torch.cat([cond.x_up.to(z.dtype), z], dim=1)
        embedding = None
        if self.noise_level_mlp is not None:
            level = noise_level.reshape(-1).expand(z.shape[0])
            embedding = self.noise_level_mlp[0](level).to(z.dtype)
            for layer in self.noise_level_mlp[1:]:
                embedding = layer(embedding)

        skips = []
        for layer in self.downs:
            x = layer(x, embedding) if isinstance(layer, ResAttnBlock) else layer(x)
            skips.append(x)
        for layer in self.mid:
            x = layer(x, embedding)
        for layer in self.ups:
            if isinstance(layer, ResAttnBlock):
                x = layer(torch.cat((x, skips.pop()), dim=1), embedding)
            else:
                x = layer(x)
        return self.final_conv(x)
