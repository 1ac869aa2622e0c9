"""The bicubic upscale x_up a denoiser is conditioned on, built the way its training data was built
(docs/method.md §1).

A model learns its condition's exact numbers: the resampling kernel, the border rule, whether
values were clipped or rounded on the way. yoda-sr's own models train on the project's bicubic;
imported upstream models were trained on their authors' recipes, which a checkpoint names in its
metadata (``x_up``) so that loading it reproduces them:

- ``bicubic``: ``imaging.resize_bicubic`` (Pillow's kernel and borders, clipped to [-1, 1] after
  each pass). The default for checkpoints that name no recipe.
- ``pil-uint8``: Janspiry's SR3 (``data/prepare_data.py``): the 8-bit LR image resized by Pillow's
  ``BICUBIC`` in 8 bits (rounded and clipped by Pillow), then read back as x / 255 * 2 - 1.
- ``matlab-lr256``: LeiaLi's SRDiff (``SRDataSet.__getitem__``): MATLAB-style ``imresize``
  (cubic a = -0.5, mirrored borders, float64, no clipping) of the 8-bit LR divided by 256, then
  (x - 0.5) / 0.5. The LR fed to its encoder is x / 255, so x_up is darker by a factor 255 / 256.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .imaging import resize_bicubic

X_UP_RECIPES: dict[str, str] = {
    "bicubic": "yoda-sr's bicubic (Pillow's kernel and borders, clipped after each pass)",
    "pil-uint8": "Pillow BICUBIC on the 8-bit LR, rounded to 8 bits (Janspiry's SR3)",
    "matlab-lr256": "MATLAB imresize, mirrored borders, unclipped, of the 8-bit LR / 256 (LeiaLi's SRDiff)",
}
DEFAULT_X_UP = "bicubic"
_SNAP = 1e-3
"""LR values this close (in 8-bit levels) to whole levels everywhere are taken as an 8-bit image."""


def x_up_recipe(metadata: Mapping[str, Any]) -> str:
    """The recipe a checkpoint's metadata names (``bicubic`` when it names none)."""
    recipe = metadata.get("x_up", DEFAULT_X_UP)
    if recipe not in X_UP_RECIPES:
        raise ValueError(f"unknown x_up recipe {recipe!r}; known: {', '.join(X_UP_RECIPES)}")
    return str(recipe)


def upscale_condition(lr: Tensor, size: tuple[int, int], recipe: str = DEFAULT_X_UP) -> Tensor:
    """x_up of N x C x h x w ``lr`` (in [-1, 1]) at HR ``size``, float32 on ``lr``'s device."""
    if recipe == "bicubic":
        return resize_bicubic(lr.float(), size=size)
    if recipe not in X_UP_RECIPES:
        raise ValueError(f"unknown x_up recipe {recipe!r}; known: {', '.join(X_UP_RECIPES)}")
    height, width = int(size[0]), int(size[1])
    if height < lr.shape[-2] or width < lr.shape[-1]:
        raise ValueError(f"x_up upscales; {tuple(lr.shape[-2:])} -> {size} shrinks")
    levels = (lr.detach().to("cpu", torch.float64) + 1) / 2 * 255
    if recipe == "pil-uint8":
        result = _pillow_uint8(levels.round().clamp(0, 255).to(torch.uint8), (height, width))
    else:
        rounded = levels.round()
        if (levels - rounded).abs().max() <= _SNAP:
            levels = rounded
        unit = _matlab_upscale(levels / 256, (height, width))
        result = ((unit - 0.5) / 0.5).float()
    return result.to(lr.device)


def _pillow_uint8(levels: Tensor, size: tuple[int, int]) -> Tensor:
    """Pillow's 8-bit BICUBIC resize of each channel of N x C x h x w uint8 ``levels``, in [-1, 1]."""
    from PIL import Image

    result = torch.empty(*levels.shape[:2], *size, dtype=torch.float32)
    for image in range(levels.shape[0]):
        for channel in range(levels.shape[1]):
            band = Image.fromarray(levels[image, channel].numpy(), mode="L")
            resized = np.asarray(band.resize((size[1], size[0]), Image.Resampling.BICUBIC))
            result[image, channel] = torch.from_numpy(resized.astype(np.float32))
    return result / 255 * 2 - 1


def _matlab_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights (out_size x 6) of MATLAB's ``imresize`` bicubic for an upscale.

    Output pixel i samples input coordinate (i + 0.5) * in / out - 0.5, as in Pillow, but taps past
    the border are mirrored (index -1 is 0, index n is n - 1) instead of dropped.
    """
    centres = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    first = np.floor(centres) - 2
    indices = (first[:, None] + np.arange(6)[None, :]).astype(np.int64)
    distance = np.abs(centres[:, None] - indices)
    weights = np.where(
        distance <= 1,
        (1.5 * distance - 2.5) * distance * distance + 1,
        np.where(distance <= 2, ((-0.5 * distance + 2.5) * distance - 4) * distance + 2, 0.0),
    )
    weights /= weights.sum(axis=1, keepdims=True)
    period = np.mod(indices, 2 * in_size)
    mirrored = np.where(period < in_size, period, 2 * in_size - 1 - period)
    return mirrored, weights


def _matlab_upscale(x: Tensor, size: tuple[int, int]) -> Tensor:
    """MATLAB-style bicubic upscale of float64 N x C x h x w ``x``: rows first, then columns, each a
    weighted sum of gathered rows (columns) taken tap by tap, in upstream's order."""
    for axis, out_size in ((2, size[0]), (3, size[1])):
        if x.shape[axis] == out_size:
            continue
        indices, weights = _matlab_taps(x.shape[axis], out_size)
        view = [1, 1, 1, 1]
        view[axis] = out_size
        result = torch.zeros(*x.shape[:axis], out_size, *x.shape[axis + 1 :], dtype=x.dtype)
        for tap in range(indices.shape[1]):
            gathered = x.index_select(axis, torch.from_numpy(indices[:, tap]))
            result += gathered.mul_(torch.from_numpy(weights[:, tap]).reshape(view))
        x = result
    return x


__all__ = ["DEFAULT_X_UP", "X_UP_RECIPES", "upscale_condition", "x_up_recipe"]
