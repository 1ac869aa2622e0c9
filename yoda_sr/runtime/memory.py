"""How much memory a run needs, and so how it runs: whole-image sampling or streamed tiles.

Whole-image sampling (``api.Upscaler._run``) keeps full-size float tensors of the state, the
condition, the attention map and the noise. ``run`` estimates their peak from the model
(``bytes_per_pixel``) and compares it with a budget (``Settings.memory_budget``, by default half the
machine's memory size, or the GPU's): under it images are sampled whole, in batches that fit; over
it, or with ``Settings.stream = "on"``, they are streamed tile by tile (``streaming``, docs/method.md §7).

The choice depends on one image's size, the model and the machine, never on the batch or on what
else is running, so an image's result does not depend on its batch; splitting a batch changes
nothing either, since the denoiser runs one image at a time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..models.base import SRDenoiser

if TYPE_CHECKING:
    from ..api import Result, Settings, Upscaler

BUDGET_FRACTION = 0.5
"""Whole-image sampling is used while its estimated peak stays under this share of the memory size."""


def memory_limit() -> int:
    """Bytes this process may use: physical RAM, or a cgroup or address-space limit when lower."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        limits.append(16 << 30)
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY and soft > 0:
            limits.append(soft)
    except (ImportError, AttributeError, ValueError, OSError):
        pass
    return min(limits)


def memory_budget(device: torch.device) -> int:
    """The default budget for whole-image tensors: a share of the machine's (and the GPU's) memory size.

    Sizes, not what is free now: the choice then depends only on the image, the model and the
    machine, not on what else happens to be running.
    """
    budget = int(memory_limit() * BUDGET_FRACTION)
    if device.type == "cuda":
        budget = min(budget, int(torch.cuda.get_device_properties(device).total_memory * BUDGET_FRACTION))
    return budget


@torch.inference_mode()
def bytes_per_pixel(model: SRDenoiser, dtype: torch.dtype) -> int:
    """Estimated peak bytes per HR pixel of whole-image sampling of one image.

    The condition's channels are counted on a small probe (x_up, base and the model's features, kept
    in float32, plus a model-dtype copy while ``prepare`` runs); the sampler holds up to 16 3-channel
    float32 tensors at once (state, masked input, eps and its tile accumulators, x0, the next state,
    noise, the known region and temporaries), the attention map, the int64 activation step and its
    float64 source; the final conversion goes through float64. For the embedded model this gives
    540 bytes; measured on the CPU: ~525 bytes per pixel between 1 and 4 MP outputs (bench/memory.py).
    """
    device = next(model.parameters()).device
    scale, side = int(model.info.scale), model.info.size_multiple
    lr = torch.zeros(1, 3, side, side, device=device, dtype=dtype)
    cond = model.prepare(lr, torch.zeros(1, 3, side * scale, side * scale, device=device, dtype=dtype))
    tensors = [cond.x_up, *([] if cond.base is None else [cond.base]), *cond.features.values()]
    channels = sum(int(t.shape[1]) for t in tensors)
    element = torch.finfo(dtype).bits // 8
    return channels * (4 + element) + 16 * 3 * 4 + 4 + 8 + 8 + 3 * 8


def run(
    upscaler: Upscaler,
    images: Sequence[np.ndarray],
    seeds: Sequence[int],
    scale: int,
    settings: Settings,
    dtype: torch.dtype,
    progress: Callable[[int, int], None] | None,
) -> list[Result]:
    """Upscale images of one shape whole (in batches under the budget) or streamed, as they need."""
    from .tiling import lr_multiple

    multiple = lr_multiple(upscaler.model.info.size_multiple, upscaler.scale)
    pixels = int(np.prod([-(-side // multiple) * multiple * upscaler.scale for side in images[0].shape[:2]]))
    budget = settings.memory_budget or memory_budget(upscaler.device)
    model = upscaler._model_in(dtype)
    per_pixel = upscaler._pixel_bytes.get(dtype) or upscaler._pixel_bytes.setdefault(
        dtype, bytes_per_pixel(model, dtype)
    )
    needed = per_pixel * pixels
    if settings.stream == "on" or (settings.stream == "auto" and settings.tile != 0 and needed > budget):
        return _run_streamed(upscaler, images, seeds, scale, settings, dtype, progress)
    per_run = max(1, budget // needed)
    results: list[Result] = []
    for first in range(0, len(images), per_run):
        part = slice(first, first + per_run)
        count = len(images[part])

        def offset(done: int, total: int, first: int = first, count: int = count) -> None:
            assert progress is not None
            progress(first * total // count + done, len(images) * total // count)

        results += upscaler._run(images[part], seeds[part], scale, settings, dtype, progress and offset)
    return results


def _run_streamed(
    upscaler: Upscaler,
    images: Sequence[np.ndarray],
    seeds: Sequence[int],
    scale: int,
    settings: Settings,
    dtype: torch.dtype,
    progress: Callable[[int, int], None] | None,
) -> list[Result]:
    from .streaming import StreamSpec, stream_images
    from .tiling import lr_multiple

    assert settings.steps is not None and settings.sampler is not None and settings.attention is not None
    assert settings.eta is not None and settings.lower_bound is not None
    tile = upscaler._tile_side(settings.tile, 0, 0, stream=True)
    assert tile is not None
    spec = StreamSpec(
        schedule=upscaler.schedule_spec.build().respace(settings.steps),
        sampler=settings.sampler,
        eta=settings.eta,
        attention=settings.attention,
        lower_bound=settings.lower_bound,
        mask_input=upscaler.mask_input,
        tile=tile,
        overlap=settings.tile_overlap,
        dtype=dtype,
        lr_multiple=lr_multiple(upscaler.model.info.size_multiple, upscaler.scale),
        x_up=upscaler.x_up,
        sparse=settings.sparse,
        block=int(settings.block),
        denoise=upscaler.denoise if dtype == upscaler.dtype else None,
        flat_floor=float(settings.flat_floor or 0.0),
    )

    def check(image: torch.Tensor) -> None:
        upscaler._check_finite(image, dtype)

    model = upscaler._model_in(dtype)
    streamed = stream_images(model, images, seeds, scale, spec, upscaler.device, progress, check)
    return [
        upscaler._result(out, attention, fraction, settings, tile, dtype, streamed=True, work=work)
        for out, attention, fraction, work in streamed
    ]
