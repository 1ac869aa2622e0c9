"""Janspiry's SR3 (Image-Super-Resolution-via-Iterative-Refinement) ``*_gen.pth`` -> yoda-sr.

The ``_gen.pth`` file is the state dict of upstream's ``GaussianDiffusion``: the UNet under
``denoise_fn.`` plus the schedule buffers (``betas`` ...). Our ``SR3UNet`` uses upstream's names below
that prefix, so the key map is: drop ``denoise_fn.``, drop the buffers. The UNet's hyperparameters
are read from tensor shapes; GroupNorm's group count and the training image size leave no trace in
the weights, so they come from the matching registered config (or the caller).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..errors import YodaError
from ..models import list_configs
from ..models.base import UPSTREAM_DIFFUSION_BUFFERS
from ..models.sr3 import UPSTREAM_PREFIX
from .schedule import schedule_from_betas

FORMAT = "sr3-janspiry"
X_UP = "pil-uint8"
"""Upstream's condition: ``data/prepare_data.py`` stores the LR resized by Pillow's 8-bit BICUBIC
(``conditioning``); imported models are conditioned the same way."""


def looks_like(state: dict[str, Tensor]) -> bool:
    return f"{UPSTREAM_PREFIX}downs.0.weight" in state and f"{UPSTREAM_PREFIX}final_conv.block.3.weight" in state


def to_ours(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Upstream keys -> ours: strip ``denoise_fn.``, drop the schedule buffers."""
    unknown = [key for key in state if not key.startswith(UPSTREAM_PREFIX) and key not in UPSTREAM_DIFFUSION_BUFFERS]
    if unknown:
        raise YodaError(f"not a Janspiry SR3 generator state dict: unexpected keys such as {unknown[0]!r}")
    return {key.removeprefix(UPSTREAM_PREFIX): value for key, value in state.items() if key.startswith(UPSTREAM_PREFIX)}


def to_upstream(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our SR3UNet keys -> upstream's (the documented key map, used by tests and exporters)."""
    return {UPSTREAM_PREFIX + key: value for key, value in state.items()}


def _structure(ours: dict[str, Tensor]) -> dict[str, Any]:
    """Hyperparameters that tensor shapes determine, plus the levels that carry attention."""
    first = ours["downs.0.weight"]
    inner = int(first.shape[0])
    levels: list[list[int]] = [[]]
    attention_levels: set[int] = set()
    index = 1
    while True:
        block = f"downs.{index}.res_block.block1.block.3.weight"
        if block in ours:
            levels[-1].append(int(ours[block].shape[0]))
            if f"downs.{index}.attn.qkv.weight" in ours:
                attention_levels.add(len(levels) - 1)
        elif f"downs.{index}.conv.weight" in ours:
            levels.append([])
        else:
            break
        index += 1
    if not levels[0] or any(len(level) != len(levels[0]) for level in levels):
        raise YodaError("SR3 weights have an irregular UNet (levels with different block counts)")
    if any(channels % inner for level in levels for channels in level):
        raise YodaError("SR3 weights: level widths are not multiples of the first convolution's width")
    return {
        "in_channel": int(first.shape[1]),
        "out_channel": int(ours["final_conv.block.3.weight"].shape[0]),
        "inner_channel": inner,
        "channel_mults": [level[0] // inner for level in levels],
        "res_blocks": len(levels[0]),
        "with_noise_level_emb": "noise_level_mlp.1.weight" in ours,
        "attention_levels": sorted(attention_levels),
    }


def _attention_levels(hparams: dict[str, Any]) -> list[int]:
    sizes = [hparams["image_size"] >> level for level in range(len(hparams["channel_mults"]))]
    return [level for level, size in enumerate(sizes) if size in hparams["attn_res"]]


def infer(ours: dict[str, Tensor], scale: int | None = None) -> tuple[dict[str, Any], str | None]:
    """SR3UNet hyperparameters for ``ours`` and the registered config they match (or None)."""
    found = _structure(ours)
    for config in list_configs():
        if config.arch != "sr3":
            continue
        known = config.hparams
        same = all(known[key] == found[key] for key in found if key != "attention_levels")
        if same and _attention_levels(known) == found["attention_levels"]:
            hparams = dict(known)
            if scale is not None:
                hparams["scale"] = scale
            return hparams, config.name
    if scale is None:
        raise YodaError(
            "these SR3 weights match no known configuration and SR3's weights do not say the scale: pass --scale"
        )
    widths = [found["inner_channel"] * mult for mult in found["channel_mults"]]
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if all(width % g == 0 for width in widths))
    image_size = 128
    hparams = {key: value for key, value in found.items() if key != "attention_levels"} | {
        "scale": scale,
        "norm_groups": groups,
        "attn_res": [image_size >> level for level in found["attention_levels"]],
        "dropout": 0.0,
        "image_size": image_size,
    }
    return hparams, None


def convert(state: dict[str, Tensor], scale: int | None = None) -> dict[str, Any]:
    """Everything a yoda-sr checkpoint needs from an upstream state dict (see convert.Converted)."""
    ours = to_ours(state)
    hparams, matched = infer(ours, scale)
    return {
        "arch": "sr3",
        "hparams": hparams,
        "tensors": ours,
        "schedule": schedule_from_betas(state.get("betas")),
        "matched_config": matched,
    }
