"""How much memory a run needs, and so how it runs: whole-image sampling or streamed tiles.

Whole-image sampling (``whole``) keeps full-size float tensors of the state, the condition, the
attention map and the noise. ``plan`` takes their estimated peak (``bytes_per_pixel`` of the model,
times the pixels) and a budget (``Settings.memory_budget``, by default ``memory_budget``: half the
machine's memory size, or the GPU's): under it images are sampled whole, in batches that fit; over
it, or with ``Settings.stream = "on"``, they are streamed tile by tile (``streaming``, docs/method.md §7).
``api.Upscaler`` dispatches on the plan.

The choice depends on one image's size, the model and the machine, never on the batch or on what
else is running, so an image's result does not depend on its batch; splitting a batch changes
nothing either, since the denoiser runs one image at a time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..models.base import SRDenoiser

BUDGET_FRACTION = 0.5
"""Whole-image sampling is used while its estimated peak stays under this share of the memory size."""


def memory_limit() -> int:
    """Bytes this process may use: physical RAM, or a cgroup limit or what an address-space limit
    (``ulimit -v``) leaves when lower. The address space counts every mapping: PyTorch's libraries
    alone take gigabytes of it, so what is left is the limit less what is mapped now."""
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
            limits.append(max(0, soft - _address_space_used()))
    except (ImportError, AttributeError, ValueError, OSError):
        pass
    return min(limits)


def _address_space_used() -> int:
    """This process's mapped address space in bytes (Linux VmSize; 0 where unknown)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


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


@dataclass(frozen=True)
class MemoryPlan:
    """How images of one size run: streamed tile by tile, or whole, ``per_run`` images at a time."""

    streamed: bool
    per_run: int
    needed: int
    """Estimated peak bytes of whole-image sampling of one image."""


def plan(pixels: int, per_pixel: int, budget: int, *, stream: str = "auto", tiling: bool = True) -> MemoryPlan:
    """Whole-image sampling while one image's estimate (``pixels`` HR pixels x ``per_pixel`` bytes)
    fits ``budget``, as many images per run as fit; streamed tiles above it (``stream`` auto, and only
    where ``tiling`` is allowed) or always (``stream`` on)."""
    needed = per_pixel * pixels
    if stream == "on" or (stream == "auto" and tiling and needed > budget):
        return MemoryPlan(streamed=True, per_run=1, needed=needed)
    return MemoryPlan(streamed=False, per_run=max(1, budget // needed), needed=needed)
