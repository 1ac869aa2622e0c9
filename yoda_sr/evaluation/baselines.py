"""The inputs and non-diffusion baselines of an evaluation: the ground truth, its LR, bicubic and
the model's regression base (what sampling leaves where nothing is diffused)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..image.conditioning import upscale_condition
from ..image.imaging import bicubic_degrade, resize_bicubic, to_array, to_tensor
from ..runtime.tiling import lr_multiple, pad_to

if TYPE_CHECKING:
    from torch import Tensor

    from ..api import Upscaler
    from ..models.base import Condition


def ground_truth(rgb: np.ndarray, scale: int) -> np.ndarray:
    """An H x W x 3 uint8/uint16 image as uint8, cropped top-left to sides that are multiples of ``scale``."""
    if rgb.dtype == np.uint16:
        rgb = ((rgb.astype(np.uint32) + 128) // 257).astype(np.uint8)
    height, width = rgb.shape[0] // scale * scale, rgb.shape[1] // scale * scale
    return np.ascontiguousarray(rgb[:height, :width])


def degrade(hr: np.ndarray, scale: int) -> np.ndarray:
    """The uint8 LR input of a uint8 HR image: the project's bicubic downscale, rounded to 8 bits."""
    _, lr = bicubic_degrade(to_tensor(hr), scale)
    return to_array(lr)


def bicubic_upscale(lr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The bicubic baseline: a uint8 LR image enlarged to ``size`` (height, width)."""
    return to_array(resize_bicubic(to_tensor(lr), size=size))


def whole_image_condition(upscaler: Upscaler, lr: np.ndarray) -> tuple[Tensor, Condition]:
    """The padded LR (1 x 3 x h' x w' on the upscaler's device) and the model's condition on it,
    prepared as ``Upscaler`` does for whole-image sampling (call under ``torch.inference_mode``)."""
    import torch

    model, factor = upscaler.model, upscaler.scale
    padded, _ = pad_to(to_tensor(lr), lr_multiple(model.info.size_multiple, factor))
    padded = padded.to(upscaler.device)
    x_up = upscale_condition(padded, (padded.shape[-2] * factor, padded.shape[-1] * factor), upscaler.x_up)
    cond = model.prepare(padded.to(upscaler.dtype), x_up.to(upscaler.dtype)).to(torch.float32)
    cond.x_up = x_up
    return padded, cond


def regression_base(upscaler: Upscaler, lr: np.ndarray, scale: int) -> np.ndarray:
    """The ``base`` method: the model's image where nothing is diffused, from its known region.

    The condition is ``whole_image_condition``'s, so pixels that YODA never diffuses come out
    identical to this image.
    """
    import torch

    model = upscaler.model
    factor = upscaler.scale
    height, width = lr.shape[0], lr.shape[1]
    with torch.inference_mode():
        _, cond = whole_image_condition(upscaler, lr)
        image = model.from_diffusion_space(model.known_region(cond), cond)[..., : height * factor, : width * factor]
        if scale != factor:
            image = resize_bicubic(image, size=(height * scale, width * scale))
    return to_array(image)


__all__ = ["bicubic_upscale", "degrade", "ground_truth", "regression_base", "whole_image_condition"]
