"""LeiaLi's SRDiff ``model_ckpt_steps_*.ckpt`` -> yoda-sr.

The checkpoint nests upstream's ``GaussianDiffusion`` state dict as ``["state_dict"]["model"]``: the
UNet under ``denoise_fn.``, the RRDB encoder under ``rrdb.``, and the schedule buffers. Our ``SRDiff``
keeps upstream's names below two renamed prefixes (``models.srdiff.UPSTREAM_PREFIXES``). Every
hyperparameter is read from tensor shapes; the fixed face sizes come from the matching config.
"""

from __future__ import annotations

import re
from typing import Any

from torch import Tensor

from ..errors import YodaError
from ..models import list_configs
from ..models.base import UPSTREAM_DIFFUSION_BUFFERS
from ..models.srdiff import UPSTREAM_PREFIXES
from .schedule import schedule_from_betas

FORMAT = "srdiff"
X_UP = "matlab-lr256"
"""Upstream's condition: ``SRDataSet`` builds ``img_lr_up = imresize(img_lr / 256, sr_scale)`` with
its MATLAB-style resize, unclipped (``conditioning``); imported models are conditioned the same way."""
_TO_OURS = {upstream: ours for ours, upstream in UPSTREAM_PREFIXES.items()}


def looks_like(state: dict[str, Tensor]) -> bool:
    return "rrdb.conv_first.weight" in state and "denoise_fn.cond_proj.weight" in state


def to_ours(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Upstream keys -> ours: ``denoise_fn.`` -> ``unet.``, ``rrdb.`` -> ``encoder.``; buffers dropped."""
    result: dict[str, Tensor] = {}
    for key, value in state.items():
        if key in UPSTREAM_DIFFUSION_BUFFERS:
            continue
        prefix = next((p for p in _TO_OURS if key.startswith(p)), None)
        if prefix is None:
            raise YodaError(f"not an SRDiff model state dict: unexpected key {key!r}")
        result[_TO_OURS[prefix] + key.removeprefix(prefix)] = value
    return result


def to_upstream(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our SRDiff keys -> upstream's (the documented key map, used by tests and exporters)."""
    result = {}
    for key, value in state.items():
        prefix = next(p for p in UPSTREAM_PREFIXES if key.startswith(p))
        result[UPSTREAM_PREFIXES[prefix] + key.removeprefix(prefix)] = value
    return result


def _conv_out(ours: dict[str, Tensor], name: str) -> int | None:
    """Output channels of a (possibly weight-normalised) convolution, or None if absent."""
    for suffix in ("weight", "weight_v"):
        if f"{name}.{suffix}" in ours:
            return int(ours[f"{name}.{suffix}"].shape[0])
    return None


def infer(ours: dict[str, Tensor]) -> tuple[dict[str, Any], str | None]:
    """SRDiff hyperparameters for ``ours`` and the registered config they match (or None)."""
    hidden = int(ours["unet.mlp.0.weight"].shape[1])
    widths = []
    level = 0
    while (width := _conv_out(ours, f"unet.downs.{level}.0.block1.block.1")) is not None:
        widths.append(width)
        level += 1
    if not widths or any(width % hidden for width in widths):
        raise YodaError("SRDiff weights: cannot read the UNet levels from the tensor shapes")
    blocks = {int(m.group(1)) for key in ours if (m := re.match(r"encoder\.RRDB_trunk\.(\d+)\.", key))}
    cond_kernel = int(ours["unet.cond_proj.weight"].shape[2])
    hparams: dict[str, Any] = {
        "hidden_size": hidden,
        "dim_mults": [width // hidden for width in widths],
        "rrdb_num_feat": int(ours["encoder.conv_first.weight"].shape[0]),
        "rrdb_num_block": len(blocks),
        "rrdb_growth": int(ours["encoder.RRDB_trunk.0.RDB1.conv1.weight"].shape[0]),
        "use_attn": any(key.startswith("unet.mid_attn.") for key in ours),
        "res": True,
        "up_input": _conv_out(ours, "unet.up_proj.1") is not None,
        "use_wn": any(key.endswith(".weight_g") for key in ours),
        "sr_scale": cond_kernel // 2,
        "residual_base": "bicubic",
        "lr_size": None,
        "hr_size": None,
    }
    for config in list_configs():
        if config.arch != "srdiff":
            continue
        known = config.hparams
        if all(known[key] == hparams[key] for key in hparams if key not in ("lr_size", "hr_size")):
            hparams["lr_size"], hparams["hr_size"] = known["lr_size"], known["hr_size"]
            return hparams, config.name
    return hparams, None


def convert(state: dict[str, Tensor], scale: int | None = None) -> dict[str, Any]:
    """Everything a yoda-sr checkpoint needs from an upstream state dict (see convert.Converted)."""
    ours = to_ours(state)
    hparams, matched = infer(ours)
    if scale is not None and scale != hparams["sr_scale"]:
        raise YodaError(f"these SRDiff weights are {hparams['sr_scale']}x (from cond_proj), not {scale}x")
    return {
        "arch": "srdiff",
        "hparams": hparams,
        "tensors": ours,
        "schedule": schedule_from_betas(state.get("betas")),
        "matched_config": matched,
    }
