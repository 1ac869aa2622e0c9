"""Pixel conversions and MATLAB/PIL-compatible bicubic resampling (docs/method.md §1).

Model tensors are float in [-1, 1], N x C x H x W, RGB. ``to_tensor`` and ``to_array`` convert
from and to uint8 or uint16 arrays. "Bicubic" is the cubic convolution kernel with a = -0.5,
stretched when shrinking (antialiasing), as in MATLAB's ``imresize`` and Pillow's ``BICUBIC``; it is
not PyTorch's default ``F.interpolate(mode="bicubic")``, which uses a = -0.75 without antialiasing.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

CUBIC_A = -0.5
CUBIC_SUPPORT = 2.0
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
BT601_Y_WEIGHTS = (65.481, 128.553, 24.966)
BT601_Y_OFFSET = 16.0


def _cubic_kernel(distance: np.ndarray, a: float = CUBIC_A) -> np.ndarray:
    """Keys' cubic convolution kernel at ``distance`` (in pixels); zero beyond 2."""
    x = np.abs(distance)
    inner = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    outer = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, inner, np.where(x < 2.0, outer, 0.0))


@lru_cache(maxsize=64)
def _taps_float64(in_size: int, out_size: int, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """Input indices and normalised weights (out_size x taps each) of one axis, as in Pillow."""
    scale = in_size / out_size
    kernel_stretch = max(scale, 1.0) if antialias else 1.0
    support = CUBIC_SUPPORT * kernel_stretch
    centres = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    first = np.maximum(np.trunc(centres - support + 0.5), 0).astype(np.int64)
    stop = np.minimum(np.trunc(centres + support + 0.5), in_size).astype(np.int64)
    taps = int((stop - first).max())
    indices = first[:, None] + np.arange(taps, dtype=np.int64)[None, :]
    weights = _cubic_kernel((indices - centres[:, None] + 0.5) / kernel_stretch)
    weights = np.where(indices < stop[:, None], weights, 0.0)
    weights /= weights.sum(axis=1, keepdims=True)
    return np.minimum(indices, in_size - 1), weights


@lru_cache(maxsize=64)
def _taps(
    in_size: int, out_size: int, antialias: bool, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Tap table of one axis as tensors on ``device``: indices and weights, each out_size x taps."""
    indices, weights = _taps_float64(in_size, out_size, antialias)
    return torch.from_numpy(indices).to(device), torch.from_numpy(weights).to(device, dtype)


def _resample_rows(x: Tensor, out_size: int, antialias: bool) -> Tensor:
    """Resample a contiguous B x H x W ``x`` along H: a weighted sum of gathered rows per tap."""
    in_size = x.shape[1]
    if in_size == out_size:
        return x
    indices, weights = _taps(in_size, out_size, antialias, x.device, x.dtype)
    result = x.index_select(1, indices[:, 0]).mul_(weights[:, 0, None])
    gathered = torch.empty_like(result)
    for tap in range(1, indices.shape[1]):
        torch.index_select(x, 1, indices[:, tap], out=gathered)
        result.add_(gathered.mul_(weights[:, tap, None]))
    return result


def _resample_columns(x: Tensor, out_size: int, antialias: bool) -> Tensor:
    """Resample a contiguous B x H x W ``x`` along W, as rows of its transpose."""
    if x.shape[2] == out_size:
        return x
    columns = _resample_rows(x.transpose(1, 2).contiguous(), out_size, antialias)
    return columns.transpose(1, 2).contiguous()


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(height, width) times ``scale``, rounded half up and at least 1: what ``resize_bicubic`` gives."""
    height, width = (max(1, math.floor(side * scale + 0.5)) for side in size)
    return height, width


def _output_size(in_size: tuple[int, int], size: tuple[int, int] | None, scale: float | None) -> tuple[int, int]:
    """Validate ``size``/``scale`` and return the output (height, width)."""
    if (size is None) == (scale is None):
        raise ValueError("resize_bicubic needs exactly one of size=(height, width) or scale")
    if size is not None:
        if len(size) != 2:
            raise ValueError(f"size must be (height, width), got {size!r}")
        height, width = (int(s) for s in size)
        if height != size[0] or width != size[1] or height < 1 or width < 1:
            raise ValueError(f"size must be two positive integers, got {size!r}")
        return height, width
    assert scale is not None
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    return scaled_size(in_size, scale)


def resize_bicubic(
    x: Tensor,
    size: tuple[int, int] | None = None,
    scale: float | None = None,
    antialias: bool = True,
    value_range: tuple[float, float] | None = (-1.0, 1.0),
) -> Tensor:
    """Bicubic resize (a = -0.5, antialiased when shrinking) of N x C x H x W or C x H x W ``x``.

    Matches Pillow's ``Image.resize(..., BICUBIC)``: output pixel i samples input coordinate
    (i + 0.5) * in / out - 0.5, the kernel is stretched by in / out when shrinking, and taps that
    fall outside the image are dropped and the rest renormalised. MATLAB's ``imresize`` instead pads
    symmetrically (mirrors the border), so the two differ only within the kernel support of the
    border. ``scale`` gives output sides round(side * scale) and the ratio used is out / in, so a
    scale and the size it yields resize identically. Like Pillow, the width pass runs first and the
    result is clipped to ``value_range`` after each pass (Pillow clips to 0..255 between its passes;
    without that, overshoot at saturated edges differs from Pillow by up to ~17 grey levels). The
    default is the pixel range of model tensors; pass None for data that is not an image. Computes
    in float32 (float64 stays float64) and returns the input dtype.
    """
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"resize_bicubic needs a floating-point tensor, got {x.dtype}")
    if x.dim() not in (3, 4):
        raise ValueError(f"expected N x C x H x W or C x H x W, got shape {tuple(x.shape)}")
    if x.shape[-2] < 1 or x.shape[-1] < 1:
        raise ValueError(f"cannot resize an empty image of shape {tuple(x.shape)}")
    out_height, out_width = _output_size((x.shape[-2], x.shape[-1]), size, scale)
    if (out_height, out_width) == tuple(x.shape[-2:]):
        return x.clone()
    compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    images = math.prod(x.shape[:-2])
    result = x.to(compute_dtype).reshape(images, x.shape[-2], x.shape[-1]).contiguous()
    for resample, out_size in ((_resample_columns, out_width), (_resample_rows, out_height)):
        result = resample(result, out_size, antialias)
        if value_range is not None:
            result = result.clamp(*value_range)
    return result.reshape(*x.shape[:-2], out_height, out_width).to(x.dtype)


def bicubic_degrade(hr: Tensor, scale: int) -> tuple[Tensor, Tensor]:
    """Crop N x C x H x W ``hr`` to a multiple of ``scale`` and bicubic-downscale it (METHOD §1).

    Returns (hr_cropped, lr); the crop keeps the top-left corner, as the SR benchmarks do.
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    height, width = hr.shape[-2] // scale * scale, hr.shape[-1] // scale * scale
    if height == 0 or width == 0:
        raise ValueError(f"image of size {tuple(hr.shape[-2:])} is smaller than the scale {scale}")
    hr_cropped = hr[..., :height, :width]
    lr = resize_bicubic(hr_cropped, size=(height // scale, width // scale))
    return hr_cropped, lr


def upscale_bicubic(lr: Tensor, scale: int) -> Tensor:
    """Bicubic upscale of ``lr`` by an integer ``scale``: the x_up condition (docs/method.md §1)."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    return resize_bicubic(lr, size=(lr.shape[-2] * scale, lr.shape[-1] * scale))


def _max_value(dtype: npt.DTypeLike) -> int:
    """Largest value of a supported image dtype (uint8 or uint16)."""
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise TypeError(f"images must be uint8 or uint16, got {dtype}")
    return int(np.iinfo(dtype).max)


def to_tensor(array: np.ndarray) -> Tensor:
    """H x W x C or H x W uint8/uint16 image -> 1 x C x H x W float32 tensor in [-1, 1]."""
    max_value = _max_value(array.dtype)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"expected an H x W or H x W x C image, got shape {array.shape}")
    pixels = torch.from_numpy(np.ascontiguousarray(array).astype(np.float32))
    return (pixels / max_value * 2.0 - 1.0).permute(2, 0, 1).unsqueeze(0).contiguous()


def to_array(x: Tensor, dtype: npt.DTypeLike = np.uint8) -> np.ndarray:
    """1 x C x H x W or C x H x W tensor in [-1, 1] -> H x W x C image (H x W if C = 1).

    Values are clamped to [-1, 1] and rounded to the nearest level of ``dtype`` (uint8 or uint16);
    NaN becomes -1 (black), so a broken result still converts (callers check finiteness first).
    """
    max_value = _max_value(dtype)
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"to_array converts one image; got a batch of {x.shape[0]}")
        x = x[0]
    if x.dim() != 3:
        raise ValueError(f"expected 1 x C x H x W or C x H x W, got shape {tuple(x.shape)}")
    unit = (x.detach().to("cpu", torch.float64).nan_to_num(-1.0).clamp(-1.0, 1.0) + 1.0) / 2.0
    levels = (unit * max_value).round()
    array = levels.permute(1, 2, 0).numpy().astype(dtype)
    return array[:, :, 0] if array.shape[2] == 1 else array


def rgb_to_y(x: Tensor) -> Tensor:
    """BT.601 luma on the [16, 235] scale, as MATLAB's ``rgb2ycbcr``, of RGB in [0, 1].

    ``x`` is N x 3 x H x W or 3 x H x W; the result keeps a channel axis of size 1 and is float32
    (float64 stays float64). PSNR/SSIM in the SR literature are computed on this channel.
    """
    if x.dim() not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"expected N x 3 x H x W or 3 x H x W RGB, got shape {tuple(x.shape)}")
    compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    weights = torch.tensor(BT601_Y_WEIGHTS, dtype=compute_dtype, device=x.device).view(3, 1, 1)
    return (x.to(compute_dtype) * weights).sum(dim=-3, keepdim=True) + BT601_Y_OFFSET


def resize_channel(channel: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Resize one H x W uint8/uint16 channel (an alpha mask) with the project's bicubic, same dtype."""
    return to_array(resize_bicubic(to_tensor(channel), size=(int(size[0]), int(size[1]))), channel.dtype)


def split_channels(image: np.ndarray | PILImage) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """(H x W x 3 colour, H x W alpha or None, was grey) of an image given to ``Upscaler.upscale``."""
    if not isinstance(image, np.ndarray):
        from PIL import Image

        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image or a numpy array, got {type(image).__name__}")
        if image.mode not in ("L", "LA", "RGB", "RGBA", "I;16"):
            image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
        image = np.asarray(image)
    if image.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"images must be uint8 or uint16, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2), None, True
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected an H x W, H x W x 3 or H x W x 4 image, got shape {image.shape}")
    channels = image.shape[2]
    colour = image[:, :, : 3 if channels >= 3 else 1]
    alpha = image[:, :, -1] if channels in (2, 4) else None
    grey = colour.shape[2] == 1
    return (np.repeat(colour, 3, axis=2) if grey else np.ascontiguousarray(colour)), alpha, grey


def join_channels(rgb: np.ndarray, alpha: np.ndarray | None, grey: bool) -> np.ndarray:
    """The inverse of ``split_channels`` for an upscaled result (alpha resized with our bicubic)."""
    colour = np.round(rgb.astype(np.float64).mean(axis=2, keepdims=True)).astype(rgb.dtype) if grey else rgb
    if alpha is None:
        return colour[:, :, 0] if grey else colour
    return np.concatenate([colour, resize_channel(alpha, rgb.shape[:2])[:, :, None]], axis=2)
