"""Attention maps A for YODA (docs/method.md §4): a registry of methods and the aggregation of heads.

``compute_attention(lr, method)`` is the one entry point: it returns N x 1 x H x W float32 maps in
[0, 1], computed once per image from the LR input. DINO methods (``dino.py``) need a weights file;
the weight-free maps (``classic.py``) do not.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoints import installed_path
from ..errors import YodaError
from . import classic

METHODS: tuple[str, ...] = (
    "dino-resnet50",
    "dino-vits8",
    "dino-vits16",
    "gaussian",
    "edge",
    "sift",
    "none",
)
DEFAULT_METHOD = "dino-resnet50"
WEIGHTED_METHODS = ("dino-resnet50", "dino-vits8", "dino-vits16")
HEAD_MODES = ("max", "mean")
NUM_HEADS = 6
"""DINO maps have six heads (ViT-S heads, or ResNet-50 channel groups)."""

_WEIGHT_FREE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gaussian": classic.gaussian_map,
    "edge": classic.edge_map,
    "sift": classic.sift_map,
}


class MissingWeightsError(YodaError):
    """DINO weights are not available: the message is one line naming what to do."""


def default_weights_path(method: str) -> Path:
    """Where yoda-sr looks for a method's weights when none are given: the checkpoint store.

    ``$YODA_SR_HOME/checkpoints/<method>.safetensors`` (YODA_SR_HOME defaults to ~/.cache/yoda-sr),
    put there by ``yoda-sr checkpoints download <method>``.
    """
    if method not in WEIGHTED_METHODS:
        raise ValueError(f"{method!r} has no weights; methods with weights: {', '.join(WEIGHTED_METHODS)}")

    return installed_path(method)


def normalise_per_image(maps: Tensor) -> Tensor:
    """Min-max normalise each H x W map of N x K x H x W ``maps`` to [0, 1]; constant maps -> 0."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    scaled = (maps - low) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, scaled, torch.zeros_like(scaled))


def _check_heads(heads: str | int, count: int = NUM_HEADS) -> str | int:
    """Validate a head choice: "max", "mean", or an index in 0..count-1 (int or decimal string)."""
    if isinstance(heads, str) and heads.strip().isdecimal():
        heads = int(heads)
    if isinstance(heads, str) and heads in HEAD_MODES:
        return heads
    if isinstance(heads, int) and not isinstance(heads, bool) and 0 <= heads < count:
        return heads
    raise ValueError(f"heads must be 'max', 'mean' or a head index 0..{count - 1}, got {heads!r}")


def aggregate_heads(heads: Tensor, mode: str | int) -> Tensor:
    """Combine per-head maps N x K x h x w into N x 1 x h x w in [0, 1] (docs/method.md §4).

    Each head is min-max normalised per image, then combined by element-wise max, mean, or by
    picking one head index, and the result is normalised again.
    """
    if heads.dim() != 4:
        raise ValueError(f"expected N x K x h x w head maps, got shape {tuple(heads.shape)}")
    mode = _check_heads(mode, heads.shape[1])
    normalised = normalise_per_image(heads.float())
    if mode == "max":
        combined = normalised.amax(dim=1, keepdim=True)
    elif mode == "mean":
        combined = normalised.mean(dim=1, keepdim=True)
    else:
        index = int(mode)
        combined = normalised[:, index : index + 1]
    return normalise_per_image(combined)


def require_weights(method: str, weights: str | os.PathLike | None = None) -> Path:
    """The weights file of a DINO method; MissingWeightsError (one line) if it does not exist."""
    path = default_weights_path(method) if weights is None else Path(weights).expanduser()
    if not path.is_file():
        raise MissingWeightsError(
            f"no weights for {method} at {path}: run `yoda-sr checkpoints download {method}`, "
            "or use a weight-free map (edge, sift or gaussian)"
        )
    return path.resolve()


@lru_cache(maxsize=4)
def _cached_backbone(method: str, path: Path, modified_ns: int, device: torch.device) -> nn.Module:
    """Load a DINO backbone once per (method, file and its modification time, device)."""
    from ..models.dino import dino_backbone

    return dino_backbone(method, path, device).eval()


def _weight_free_maps(lr: Tensor, method: str) -> Tensor:
    """A weight-free map of each image of ``lr`` (N x 3 x h x w in [-1, 1]): N x 1 x h x w."""
    if method == "none":
        return torch.ones(lr.shape[0], 1, *lr.shape[-2:])
    pixels = ((lr.detach().to("cpu", torch.float64) + 1.0) / 2.0).clamp(0.0, 1.0)
    compute = _WEIGHT_FREE[method]
    maps = [torch.from_numpy(compute(image.permute(1, 2, 0).numpy())) for image in pixels]
    return torch.stack(maps).unsqueeze(1).float()


def compute_attention(
    lr: Tensor,
    method: str = DEFAULT_METHOD,
    *,
    hr_size: tuple[int, int] | None = None,
    heads: str | int = "max",
    weights: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Attention maps A of LR images (N x 3 x h x w in [-1, 1]): N x 1 x H x W float32 in [0, 1].

    Every map is min-max normalised per image and bilinearly resized to ``hr_size`` (default: the
    LR size); ``none`` is the exception, A = 1 everywhere (plain diffusion). ``heads`` ("max",
    "mean" or an index 0..5) picks how DINO heads combine; weight-free maps ignore it. DINO weights
    come from ``weights`` or ``default_weights_path(method)``; if the file is missing this raises
    MissingWeightsError, never falling back to another method. The result lies on ``device``
    (default: ``lr``'s).
    """
    if method not in METHODS:
        raise ValueError(f"unknown attention method {method!r}; methods: {', '.join(METHODS)}")
    heads = _check_heads(heads)
    if lr.dim() != 4 or lr.shape[1] != 3:
        raise ValueError(f"expected LR images N x 3 x h x w, got shape {tuple(lr.shape)}")
    out_size = tuple(lr.shape[-2:]) if hr_size is None else (int(hr_size[0]), int(hr_size[1]))
    if min(out_size) < 1:
        raise ValueError(f"hr_size must be two positive integers, got {hr_size!r}")
    device = lr.device if device is None else torch.device(device)
    if method in WEIGHTED_METHODS:
        path = require_weights(method, weights)
        backbone = _cached_backbone(method, path, path.stat().st_mtime_ns, device)
    with torch.inference_mode():
        if method in WEIGHTED_METHODS:
            raw_heads = backbone(lr.to(device, torch.float32))
            maps = aggregate_heads(raw_heads.float(), heads)
        else:
            maps = _weight_free_maps(lr, method).to(device)
        if tuple(maps.shape[-2:]) != out_size:
            maps = F.interpolate(maps, size=out_size, mode="bilinear", align_corners=False)
        maps = maps.clamp(0.0, 1.0)
    # Cloned outside inference mode, so callers may use the map in autograd or modify it in place.
    return maps.clone()
