"""Realistic training LR: blur, resize, noise and JPEG in one or two random rounds, then the LR size.

A bicubic downscale is the one degradation a model trained on it knows; a photo reaches it blurred
by its lens and its camera's processing, resized on the way, noisy and JPEG-compressed, sometimes
twice (a photo of a shared photo). ``RealisticDegradation`` draws such a history per training
sample (the idea of Real-ESRGAN's "high-order" degradation model, written here in our own terms):

1. a first round on the HR crop: a blur (isotropic or anisotropic Gaussian, or a generalized
   Gaussian, on an odd kernel of 7-21 px), a resize up, down or not at all (area, bilinear or
   bicubic), noise (Gaussian or Poisson, in colour or the same in every channel) and JPEG;
2. with a probability, a second round of the same with its own (milder) ranges;
3. the resize to exactly the LR size (H // scale x W // scale) and a last JPEG.

Every resize keeps the image's extent (Pillow's pixel-centre mapping, as ``resize_bicubic``), and
the blur kernels are centred, so the LR stays aligned with the HR crop as a bicubic downscale is:
with every stage off (``RealisticDegradation.off()``) the result is the project's bicubic LR of the
crop cut to a multiple of the scale (top-left, as ``bicubic_degrade``), up to a level of rounding.
Every draw comes from the numpy Generator passed in, so an LR is a function of its seed. Pixels are
float32 in 8-bit levels between stages; the defaults and why they are milder than the paper's are
in docs/method.md §6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import SettingError
from .degradations import jpeg_roundtrip

KERNEL_KINDS = ("isotropic", "anisotropic", "generalized")
"""The blur kernels a round draws, weighted by ``RoundRanges.kernel_kinds``."""
INTERPOLATIONS = ("area", "bilinear", "bicubic")
"""Resize filters (Pillow's BOX, BILINEAR and BICUBIC, antialiased when shrinking)."""
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _normalised(weights: tuple[float, ...]) -> np.ndarray:
    array = np.asarray(weights, dtype=np.float64)
    return array / array.sum()


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _require(name: str, ok: bool, message: str) -> None:
    if not ok:
        raise SettingError(name, message)


def _span(name: str, value: object, lowest: float, highest: float, integer: bool = False) -> tuple[float, float]:
    """(low, high) with lowest <= low <= high <= highest (whole numbers with ``integer``)."""
    kind = int if integer else int | float
    ok = (
        isinstance(value, tuple)
        and len(value) == 2
        and all(_is_number(item) and isinstance(item, kind) for item in value)
        and lowest <= value[0] <= value[1] <= highest
    )
    what = "whole numbers" if integer else "numbers"
    _require(name, ok, f"must be (low, high), {what} with {lowest} <= low <= high <= {highest}, got {value!r}")
    assert isinstance(value, tuple)
    return value[0], value[1]


def _weights(name: str, value: object) -> None:
    ok = (
        isinstance(value, tuple)
        and len(value) == 3
        and all(_is_number(item) and item >= 0 for item in value)
        and sum(value) > 0
    )
    _require(name, ok, f"must be three weights >= 0, not all 0, got {value!r}")


def _interpolations(name: str, value: object) -> None:
    ok = isinstance(value, tuple) and len(value) > 0 and all(item in INTERPOLATIONS for item in value)
    _require(name, ok, f"must be a non-empty tuple of {', '.join(INTERPOLATIONS)}, got {value!r}")


@dataclass(frozen=True)
class RoundRanges:
    """What one round draws from: probabilities in [0, 1], weights (relative), and (low, high)
    ranges drawn uniformly. Refused with a SettingError naming the field when out of range."""

    blur: float = 1.0
    """Probability of a blur."""
    kernel_size: tuple[int, int] = (7, 21)
    """Kernel sides: one of the odd sizes in this range, uniformly."""
    kernel_kinds: tuple[float, float, float] = (0.5, 0.3, 0.2)
    """Weights of the isotropic Gaussian, anisotropic Gaussian and generalized Gaussian kernels."""
    sigma: tuple[float, float] = (0.2, 2.0)
    """Gaussian sigma along each of the kernel's axes (pixels)."""
    beta: tuple[float, float] = (0.5, 4.0)
    """Generalized Gaussian exp(-d^beta / 2), d the distance in sigmas: 2 is the Gaussian, lower
    has heavier tails, higher a flatter top."""
    resize: tuple[float, float, float] = (0.2, 0.7, 0.1)
    """Weights of resizing up, down and not at all."""
    scale: tuple[float, float] = (0.4, 1.5)
    """Resize factors: up draws in [1, high], down in [low, 1]."""
    interpolations: tuple[str, ...] = INTERPOLATIONS
    """The resize filters drawn from, uniformly."""
    noise: float = 0.5
    """Probability of noise."""
    gaussian: float = 0.5
    """Share of the noise that is Gaussian; the rest is Poisson (shot) noise."""
    noise_sigma: tuple[float, float] = (1.0, 15.0)
    """Gaussian noise sigma (8-bit levels)."""
    poisson_sigma: tuple[float, float] = (1.0, 10.0)
    """Poisson noise: its sigma at mid-grey (8-bit levels); it grows as the square root of the level."""
    grey: float = 0.4
    """Probability that the noise is the same in every channel (luma noise) rather than per channel."""
    jpeg: float = 0.7
    """Probability of a JPEG round trip."""
    quality: tuple[int, int] = (50, 95)
    """JPEG quality."""

    def __post_init__(self) -> None:
        for name in ("blur", "noise", "gaussian", "grey", "jpeg"):
            value = getattr(self, name)
            _require(name, _is_number(value) and 0 <= value <= 1, f"must be a probability in [0, 1], got {value!r}")
        for name in ("kernel_kinds", "resize"):
            _weights(name, getattr(self, name))
        low, high = _span("kernel_size", self.kernel_size, 3, 51, integer=True)
        _require("kernel_size", low % 2 == 1 and high % 2 == 1, f"must be odd sizes, got {self.kernel_size!r}")
        _span("sigma", self.sigma, 0.05, 20.0)
        _span("beta", self.beta, 0.2, 10.0)
        low, high = _span("scale", self.scale, 0.1, 4.0)
        _require("scale", low <= 1 <= high, f"must hold 1 (down to low, up to high), got {self.scale!r}")
        _interpolations("interpolations", self.interpolations)
        _span("noise_sigma", self.noise_sigma, 0.0, 50.0)
        _span("poisson_sigma", self.poisson_sigma, 0.0, 50.0)
        _span("quality", self.quality, 1, 100, integer=True)


SECOND_ROUND = RoundRanges(
    blur=0.8, sigma=(0.2, 1.5), scale=(0.6, 1.2), noise_sigma=(1.0, 10.0), poisson_sigma=(1.0, 8.0), jpeg=0.5
)
"""The second round's defaults: the first's kinds of stage, with smaller blurs, resizes and noise."""
NO_ROUND = RoundRanges(blur=0.0, resize=(0.0, 0.0, 1.0), noise=0.0, jpeg=0.0)
"""A round that does nothing."""


@dataclass(frozen=True)
class RealisticDegradation:
    """An HR crop (H x W x 3 uint8) to its LR (H // scale x W // scale x 3 uint8) through one or two
    random rounds of blur, resize, noise and JPEG, the resize to the LR size and a last JPEG."""

    first: RoundRanges = RoundRanges()
    """The first round, on the HR crop."""
    second: RoundRanges = SECOND_ROUND
    """The second round's ranges."""
    second_round: float = 0.5
    """Probability of a second round."""
    final_interpolations: tuple[str, ...] = INTERPOLATIONS
    """The filters of the resize to the LR size, drawn uniformly."""
    final_jpeg: float = 0.8
    """Probability of a JPEG round trip of the LR, the last step."""
    final_quality: tuple[int, int] = (50, 95)
    """Its quality."""

    def __post_init__(self) -> None:
        for name in ("first", "second"):
            value = getattr(self, name)
            _require(name, isinstance(value, RoundRanges), f"must be a RoundRanges, got {type(value).__name__}")
        for name in ("second_round", "final_jpeg"):
            value = getattr(self, name)
            _require(name, _is_number(value) and 0 <= value <= 1, f"must be a probability in [0, 1], got {value!r}")
        _interpolations("final_interpolations", self.final_interpolations)
        _span("final_quality", self.final_quality, 1, 100, integer=True)

    @classmethod
    def off(cls) -> RealisticDegradation:
        """Every random stage off: the bicubic resize to the LR size alone."""
        return cls(NO_ROUND, NO_ROUND, second_round=0.0, final_interpolations=("bicubic",), final_jpeg=0.0)

    def apply(self, hr: np.ndarray, scale: int, generator: np.random.Generator) -> np.ndarray:
        """The LR of ``hr`` cut to a multiple of ``scale`` (top-left), drawn from ``generator``."""
        if hr.dtype != np.uint8 or hr.ndim != 3 or hr.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 uint8 image, got {hr.dtype} {hr.shape}")
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        height, width = hr.shape[0] // scale, hr.shape[1] // scale
        if height == 0 or width == 0:
            raise ValueError(f"image of size {hr.shape[:2]} is smaller than the scale {scale}")
        image = hr[: height * scale, : width * scale].astype(np.float32)
        image = degrade_round(image, self.first, generator)
        if generator.random() < self.second_round:
            image = degrade_round(image, self.second, generator)
        image = resize(image, (height, width), str(generator.choice(self.final_interpolations)))
        lr = to_uint8(image)
        if generator.random() < self.final_jpeg:
            lr = jpeg_roundtrip(lr, int(generator.integers(self.final_quality[0], self.final_quality[1] + 1)))
        return lr


def degrade_round(image: np.ndarray, ranges: RoundRanges, generator: np.random.Generator) -> np.ndarray:
    """One round on a float32 H x W x 3 image in 8-bit levels: blur, resize, noise, JPEG, each with
    its probability (a new array; its size changes with the resize)."""
    if generator.random() < ranges.blur:
        image = blur(image, random_kernel(ranges, generator))
    direction = int(generator.choice(3, p=_normalised(ranges.resize)))
    if direction < 2:
        factor = generator.uniform(1.0, ranges.scale[1]) if direction == 0 else generator.uniform(ranges.scale[0], 1.0)
        size = (max(1, round(image.shape[0] * factor)), max(1, round(image.shape[1] * factor)))
        image = resize(image, size, str(generator.choice(ranges.interpolations)))
    if generator.random() < ranges.noise:
        image = add_noise(image, ranges, generator)
    if generator.random() < ranges.jpeg:
        quality = int(generator.integers(ranges.quality[0], ranges.quality[1] + 1))
        image = jpeg_roundtrip(to_uint8(image), quality).astype(np.float32)
    return image


def random_kernel(ranges: RoundRanges, generator: np.random.Generator) -> np.ndarray:
    """A blur kernel drawn from ``ranges``: kind, odd size, sigmas, rotation and (generalized) shape."""
    sizes = np.arange(ranges.kernel_size[0], ranges.kernel_size[1] + 1, 2)
    size = int(generator.choice(sizes))
    kind = KERNEL_KINDS[int(generator.choice(3, p=_normalised(ranges.kernel_kinds)))]
    sigma_x = float(generator.uniform(*ranges.sigma))
    sigma_y, angle, beta = sigma_x, 0.0, 2.0
    if kind == "anisotropic" or (kind == "generalized" and generator.random() < 0.5):
        sigma_y = float(generator.uniform(*ranges.sigma))
        angle = float(generator.uniform(-math.pi, math.pi))
    if kind == "generalized":
        beta = float(generator.uniform(*ranges.beta))
    return gaussian_kernel(size, sigma_x, sigma_y, angle, beta)


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, angle: float = 0.0, beta: float = 2.0) -> np.ndarray:
    """A size x size kernel (size odd), sum 1: exp(-d^beta / 2), d the distance from the centre in
    units of (sigma_x, sigma_y) along axes turned by ``angle`` (radians). beta = 2: a Gaussian."""
    half = size // 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    along = (math.cos(angle) * x + math.sin(angle) * y) / sigma_x
    across = (-math.sin(angle) * x + math.cos(angle) * y) / sigma_y
    kernel = np.exp(-0.5 * (along**2 + across**2) ** (beta / 2))
    return (kernel / kernel.sum()).astype(np.float32)


def blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``image`` (H x W x 3 float32) filtered by a centred ``kernel``, the border mirrored."""
    from scipy import ndimage

    return np.asarray(ndimage.correlate(image, kernel[:, :, None], mode="reflect"), dtype=np.float32)


def resize(image: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    """``image`` (H x W x 3 float32, 8-bit levels) resized to ``size`` (height, width) with an
    ``INTERPOLATIONS`` filter, each channel by Pillow in float, clipped to 0..255."""
    if image.shape[:2] == tuple(size):
        return image
    from PIL import Image

    filters = {"area": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
    height, width = size
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., channel])).resize((width, height), filters[interpolation])
        )
        for channel in range(image.shape[2])
    ]
    return np.clip(np.stack(planes, axis=-1), 0, 255).astype(np.float32)


def add_noise(image: np.ndarray, ranges: RoundRanges, generator: np.random.Generator) -> np.ndarray:
    """Gaussian or Poisson noise drawn from ``ranges``, per channel or the same in all (grey)."""
    grey = generator.random() < ranges.grey
    shape = (*image.shape[:2], 1) if grey else image.shape
    if generator.random() < ranges.gaussian:
        sigma = float(generator.uniform(*ranges.noise_sigma))
        noise = generator.standard_normal(shape, dtype=np.float32) * sigma
    else:
        sigma = float(generator.uniform(*ranges.poisson_sigma))
        if sigma <= 0:
            return image
        photons = 127.5 / sigma**2  # per level: the variance of counts / photons is level / photons
        level = (image @ _LUMA)[..., None] if grey else image
        noise = (generator.poisson(np.maximum(level, 0) * photons) / photons - level).astype(np.float32)
    return np.clip(image + noise, 0, 255).astype(np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


__all__ = [
    "INTERPOLATIONS",
    "KERNEL_KINDS",
    "RealisticDegradation",
    "RoundRanges",
    "add_noise",
    "blur",
    "degrade_round",
    "gaussian_kernel",
    "random_kernel",
    "resize",
]
