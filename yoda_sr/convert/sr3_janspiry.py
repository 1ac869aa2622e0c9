"""Janspiry's SR3 (Image-Super-Resolution-via-Iterative-Refinement) ``*_gen.pth`` -> yoda-sr.

The ``_gen.pth`` file is the state dict of upstream's ``GaussianDiffusion``: the UNet under
``denoise_fn.`` plus the schedule buffers (``betas`` ...). Our ``SR3UNet`` uses upstream's names below
that prefix, so the key map is: drop ``denoise_fn.``, drop the buffers. The UNet's hyperparameters
are read from tensor shapes; GroupNorm's group count, the scale and the training image size leave no
trace in the weights, so they come from the registered config that matches on everything the file
and the caller say (UNet, schedule, scale, groups), or from the caller; never from a guess.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..diffusion.schedules import ScheduleSpec
from ..errors import SettingError, YodaError
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


def _same_unet(known: dict[str, Any], found: dict[str, Any]) -> bool:
    same = all(known[key] == found[key] for key in found if key != "attention_levels")
    return same and _attention_levels(known) == found["attention_levels"]


def _check_groups(found: dict[str, Any], norm_groups: int) -> None:
    widths = sorted({found["inner_channel"] * mult for mult in found["channel_mults"]} | {found["inner_channel"]})
    if isinstance(norm_groups, bool) or not isinstance(norm_groups, int) or norm_groups < 1:
        raise SettingError("norm_groups", f"must be a positive whole number, got {norm_groups!r}")
    if any(width % norm_groups for width in widths):
        shown = ", ".join(str(width) for width in widths)
        raise SettingError("norm_groups", f"{norm_groups} does not divide the UNet's widths ({shown})")


def infer(
    ours: dict[str, Tensor],
    scale: int | None = None,
    *,
    norm_groups: int | None = None,
    schedule: ScheduleSpec | None = None,
    config: str | None = None,
) -> tuple[dict[str, Any], str | None]:
    """SR3UNet hyperparameters for ``ours`` and the registered config they match (or None).

    A config matches on everything that identifies it: the UNet read from the shapes, the schedule
    read from the ``betas`` buffer (when the file has it), and the scale and group count when the
    caller gives them. ``config`` (a registry entry's) is the only candidate. Two configs that still
    both fit are an error, never the first of a list. Without a match, GroupNorm's group count is
    not in the weights and is never guessed: the caller gives it, as the scale.
    """
    found = _structure(ours)
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= 16):
        raise SettingError("scale", f"must be a whole number 1..16, got {scale!r}")
    if norm_groups is not None:
        _check_groups(found, norm_groups)
    configs = [c for c in list_configs() if c.arch == "sr3" and (config is None or c.name == config)]
    same_unet = [c for c in configs if _same_unet(c.hparams, found)]
    if config is not None and not same_unet:
        raise YodaError(f"these SR3 weights do not have the UNet of {config}, the configuration this name is for")
    matches = [
        c
        for c in same_unet
        if (schedule is None or config is not None or c.schedule.to_dict() == schedule.to_dict())
        and (scale is None or c.hparams["scale"] == scale)
        and (norm_groups is None or c.hparams["norm_groups"] == norm_groups)
    ]
    if len(matches) > 1:
        names = ", ".join(f"{c.name} ({c.hparams['scale']}x)" for c in matches)
        raise SettingError("scale", f"these SR3 weights fit {names} alike; give the scale to choose")
    if matches:
        return dict(matches[0].hparams), matches[0].name
    if config is not None:
        entry_hparams = same_unet[0].hparams
        setting = "scale" if scale not in (None, entry_hparams["scale"]) else "norm_groups"
        value = scale if setting == "scale" else norm_groups
        raise SettingError(setting, f"{config} has {setting} {entry_hparams[setting]}, not {value}")
    hint = ""
    if same_unet:  # the closest first: the scale given, then the group count given; not by name
        ranked = sorted(
            same_unet,
            key=lambda c: (c.hparams["scale"] != scale, c.hparams["norm_groups"] != norm_groups, c.name),
        )
        shown = ", ".join(f"{c.name}'s ({c.hparams['scale']}x, {c.hparams['norm_groups']} groups)" for c in ranked)
        hint = f" (the UNet is {shown}, but not its schedule or the settings given)"
    if scale is None:
        raise SettingError(
            "scale", f"these SR3 weights match no known configuration{hint}, and SR3 weights do not record the scale"
        )
    if norm_groups is None:
        raise SettingError(
            "norm_groups",
            f"these SR3 weights match no known configuration{hint}, and GroupNorm's group count is not in the "
            "weights; give the training config's norm_groups (Janspiry's default is 32, sr_sr3_64_512.json uses 16)",
        )
    image_size = 128
    hparams = {key: value for key, value in found.items() if key != "attention_levels"} | {
        "scale": scale,
        "norm_groups": norm_groups,
        "attn_res": [image_size >> level for level in found["attention_levels"]],
        "dropout": 0.0,
        "image_size": image_size,
    }
    return hparams, None


def convert(
    state: dict[str, Tensor], scale: int | None = None, *, norm_groups: int | None = None, config: str | None = None
) -> dict[str, Any]:
    """Everything a yoda-sr checkpoint needs from an upstream state dict (see convert.Converted)."""
    ours = to_ours(state)
    schedule = schedule_from_betas(state.get("betas"))
    hparams, matched = infer(ours, scale, norm_groups=norm_groups, schedule=schedule, config=config)
    return {"arch": "sr3", "hparams": hparams, "tensors": ours, "schedule": schedule, "matched_config": matched}
