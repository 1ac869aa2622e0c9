"""Whole-image sampling: a batch of images of one size as one window each (``window``).

The condition, the attention map (at HR size) and the state are full-size tensors; a tile plan
bounds only what the denoiser sees at once (``tiling``). Used while they fit the memory budget
(``memory.plan``); larger images are streamed (``streaming``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..attention import compute_attention
from ..diffusion.loop import make_noise_sampler
from ..diffusion.masking import flat_areas, update_fraction
from ..image.imaging import resize_bicubic, to_array, to_tensor
from ..models.base import SRDenoiser
from .sparse import Evaluator, StepProgress
from .tiling import lr_multiple, pad_to
from .window import SamplingSpec, Upscaled, condition, sample_window


@torch.inference_mode()
def upscale_whole(
    model: SRDenoiser,
    images: Sequence[np.ndarray],
    seeds: Sequence[int],
    scale: int,
    spec: SamplingSpec,
    *,
    device: torch.device,
    tile: int | None,
    overlap: int,
    tile_batch: int = 1,
    progress: Callable[[int, int], None] | None = None,
    check: Callable[[Tensor], None] | None = None,
) -> list[Upscaled]:
    """Super-resolve H x W x 3 uint8/uint16 images of one shape by ``scale`` (at most the model's).

    ``tile`` is the denoiser's HR tile side (None: the whole image); ``progress`` counts dense tile
    calls per step; ``check`` raises on a non-finite sampled image before anything is converted.
    """
    model_scale = int(model.info.scale)
    bits = images[0].dtype
    lr = torch.cat([to_tensor(image) for image in images])
    if lr.shape[1] != 3:
        raise ValueError("Upscaler takes H x W x 3 images; convert greyscale to RGB first")
    lr, (height, width) = pad_to(lr, lr_multiple(model.info.size_multiple, model_scale))
    lr = lr.to(device)
    hr_size = (lr.shape[-2] * model_scale, lr.shape[-1] * model_scale)
    cond = condition(model, lr, hr_size, spec)
    attention, flat = None, None
    if spec.attention != "none":
        attention = compute_attention(lr, spec.attention, hr_size=hr_size)
        if spec.flat_floor:
            flat = flat_areas(lr, spec.flat_floor, model_scale)

    schedule = spec.schedule
    evaluator = Evaluator(
        model, cond, tile=tile, overlap=overlap, block=spec.block, denoise=spec.denoise, tile_batch=tile_batch
    )
    ticks = StepProgress(progress, schedule.num_steps, len(evaluator.tiles) * len(images))
    evaluator.watch(ticks.call)  # the evaluator runs the denoiser one image at a time
    noise = make_noise_sampler([torch.Generator().manual_seed(int(seed)) for seed in seeds])
    sampled = sample_window(
        model, cond, spec, evaluator, attention=attention, flat=flat, noise=noise, callback=ticks.step, block=spec.block
    )
    if check is not None:
        check(sampled.image)
    window = (slice(None), slice(None), slice(0, height * model_scale), slice(0, width * model_scale))
    sr = sampled.image[window]
    if scale != model_scale:
        sr = resize_bicubic(sr, size=(height * scale, width * scale))
    work = evaluator.work_fraction(schedule.num_steps)
    return [
        Upscaled(
            image=to_array(sr[i : i + 1].float(), bits),
            attention=None if attention is None else attention[window][i, 0].cpu().numpy(),
            update_fraction=(
                1.0 if sampled.activation is None else update_fraction(sampled.activation[window][i], schedule.steps)
            ),
            work_fraction=work[i],
        )
        for i in range(len(images))
    ]
