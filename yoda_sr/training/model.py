"""The model a run trains (new, fine-tuned or initialised from a checkpoint), its learning-rate
schedule and its exponential moving average."""

from __future__ import annotations

import math
from typing import Any

import torch

from .. import checkpoints
from ..diffusion.resshift import SAMPLER as RESSHIFT_SAMPLER
from ..diffusion.resshift import ResShiftSpec
from ..errors import SettingError, setting
from ..models import create_model, get_config, list_configs
from ..models.base import SRDenoiser
from .config import TrainConfig


def build_model(config: TrainConfig) -> tuple[SRDenoiser, dict[str, Any]]:
    """The model to train and the base of its metadata (architecture, schedule, sampling)."""

    names = {c.name for c in list_configs()}
    model: SRDenoiser
    if config.model in names:
        spec = get_config(config.model)
        model = create_model(config.model)
        metadata = {
            "arch": spec.arch,
            "hparams": model.config,
            "schedule": spec.schedule.to_dict(),
            "sampling": {"steps": spec.sampling_steps, "sampler": "ddpm"},
            "base_config": spec.name,
        }
    else:
        loaded = checkpoints.load_denoiser(config.model)
        model = loaded.model.float().train().requires_grad_(True)
        kept = ("arch", "hparams", "process", "schedule")
        metadata = {key: loaded.metadata[key] for key in kept if key in loaded.metadata}
        metadata["sampling"] = loaded.metadata.get("sampling", {"steps": 100, "sampler": "ddpm"})
        metadata["fine_tuned_from"] = {"model": loaded.name, "sha256": loaded.sha256}
    if config.init_from:
        source = checkpoints.load_denoiser(config.init_from)
        try:
            model.load_state_dict(source.model.state_dict(), strict=True)
        except RuntimeError as error:
            raise SettingError("init_from", f"{config.init_from}: {str(error).splitlines()[0]}") from None
        metadata["initialised_from"] = {"model": source.name, "sha256": source.sha256}
    return model, _with_process(metadata, config)


def shift_spec(config: TrainConfig) -> ResShiftSpec:
    """The ResShift chain a run's settings describe (docs/method.md §10)."""
    return ResShiftSpec(
        steps=config.shift_steps,
        kappa=config.kappa,
        eta_first=config.eta_first,
        eta_last=config.eta_last,
        power=config.eta_power,
    )


def _with_process(metadata: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
    """``metadata`` for the run's process: ResShift replaces the schedule and the sampling defaults.

    Fine-tuning keeps the chain a model was trained on: a ResShift model with other ResShift
    settings, or trained with the other process, is refused in one line.
    """
    trained = metadata.get("process", "ddpm")
    if config.process == "ddpm":
        if trained != "ddpm":
            raise SettingError(
                "model", f"{config.model} was trained with ResShift; fine-tune it with {setting('process', 'resshift')}"
            )
        return metadata
    spec = shift_spec(config).to_dict()
    if trained == "resshift" and metadata.get("schedule") != spec:
        raise SettingError(
            "model",
            f"{config.model} was trained on the ResShift chain {metadata.get('schedule')}; this run's "
            f"settings describe {spec}: set shift_steps, kappa, eta_first, eta_last and eta_power to the model's",
        )
    return {
        **metadata,
        "process": "resshift",
        "schedule": spec,
        "sampling": {"steps": spec["steps"], "sampler": RESSHIFT_SAMPLER},
    }


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up over ``warmup`` steps, then constant or a cosine decay to 0."""
    if step < config.warmup:
        return (step + 1) / config.warmup
    if config.lr_schedule == "constant":
        return 1.0
    progress = (step - config.warmup) / max(1, config.iterations - config.warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def ema_decay(step: int, ema: float) -> float:
    """The EMA decay at a step: ``ema``, ramped up early so the average is not stuck at the init."""
    return min(ema, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers are copied."""
    for ema_param, param in zip(ema.parameters(), model.parameters(), strict=True):
        ema_param.lerp_(param, 1 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers(), strict=True):
        ema_buffer.copy_(buffer)
