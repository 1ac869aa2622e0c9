"""RRDBNet, the ESRGAN-style regression network that SRDiff uses as its LR encoder.

Module names and parameter shapes follow SRDiff's ``models/diffsr_modules.py`` and
``models/commons.py`` (github.com/LeiaLi/SRDiff), so an upstream ``rrdb.*`` state dict loads
unchanged; the computation (input scaling, residual factors 0.2, nearest x2 upsampling steps, output
clamp) is the same too.
"""

from __future__ import annotations

import math
from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SUPPORTED_SCALES = (2, 4, 8)


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=True)


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions whose output is added back scaled by 0.2 (ESRGAN)."""

    def __init__(self, num_feat: int, growth: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(num_feat, growth)
        self.conv2 = _conv3x3(num_feat + growth, growth)
        self.conv3 = _conv3x3(num_feat + 2 * growth, growth)
        self.conv4 = _conv3x3(num_feat + 3 * growth, growth)
        self.conv5 = _conv3x3(num_feat + 4 * growth, num_feat)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, the sum added back scaled by 0.2."""

    def __init__(self, num_feat: int, growth: int) -> None:
        super().__init__()
        self.RDB1 = ResidualDenseBlock(num_feat, growth)
        self.RDB2 = ResidualDenseBlock(num_feat, growth)
        self.RDB3 = ResidualDenseBlock(num_feat, growth)

    def forward(self, x: Tensor) -> Tensor:
        out = self.RDB3(self.RDB2(self.RDB1(x)))
        return out * 0.2 + x


class RRDBNet(nn.Module):
    """LR image ([-1, 1]) -> SR image ([-1, 1]), optionally with the LR-size trunk features.

    ``nf`` feature channels, ``nb`` RRDB blocks of growth ``gc``; the LR features are upsampled by
    ``log2(scale)`` nearest x2 + conv steps (``upconv1``, ``upconv2``, ``upconv3``). Upstream always
    builds two steps and a third for x8; x2 (one step) is this project's extension.
    """

    def __init__(
        self, in_nc: int = 3, out_nc: int = 3, nf: int = 64, nb: int = 23, gc: int = 32, scale: int = 4
    ) -> None:
        super().__init__()
        if scale not in SUPPORTED_SCALES:
            raise ValueError(f"RRDBNet supports scales {SUPPORTED_SCALES}, got {scale}")
        if nb < 1:
            raise ValueError(f"RRDBNet needs at least one RRDB block, got nb={nb}")
        self.scale = scale
        self.num_upsample_steps = int(math.log2(scale))
        self.conv_first = _conv3x3(in_nc, nf)
        self.RRDB_trunk = nn.ModuleList(RRDB(nf, gc) for _ in range(nb))
        self.trunk_conv = _conv3x3(nf, nf)
        for step in range(1, self.num_upsample_steps + 1):
            self.add_module(f"upconv{step}", _conv3x3(nf, nf))
        self.HRconv = _conv3x3(nf, nf)
        self.conv_last = _conv3x3(nf, out_nc)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2)

    @property
    def num_features(self) -> int:
        """Length of the feature list: one entry per RRDB block, then the trunk output."""
        return len(self.RRDB_trunk) + 1

    @overload
    def forward(self, lr: Tensor, return_features: Literal[False] = ..., residual: bool = ...) -> Tensor: ...

    @overload
    def forward(
        self, lr: Tensor, return_features: Literal[True], residual: bool = ...
    ) -> tuple[Tensor, list[Tensor]]: ...

    def forward(
        self, lr: Tensor, return_features: bool = False, residual: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """The SR image, and with ``return_features`` the trunk features (upstream's ``get_fea``).

        With ``residual`` the last convolution's output is returned unclamped, as a correction to
        be added to the bicubic upscale (in [-1, 1] image units).
        """
        features: list[Tensor] = []
        x = (lr + 1) / 2
        first = feature = self.conv_first(x)
        for block in self.RRDB_trunk:
            feature = block(feature)
            features.append(feature)
        feature = first + self.trunk_conv(feature)
        features.append(feature)

        for step in range(1, self.num_upsample_steps + 1):
            upconv = getattr(self, f"upconv{step}")
            feature = self.lrelu(upconv(F.interpolate(feature, scale_factor=2, mode="nearest")))
        out = self.conv_last(self.lrelu(self.HRconv(feature)))
        if not residual:
            out = out.clamp(0, 1) * 2 - 1
        if return_features:
            return out, features
        return out
