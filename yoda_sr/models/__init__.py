"""Denoiser architectures and a registry of named configurations.

``create_model("sr3-16-128")`` builds a randomly initialised model from a registered config;
``create_model_from_config(arch, hparams)`` rebuilds one from checkpoint metadata. Each architecture
module registers its class and its named configs on import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..schedules import ScheduleSpec
from .base import Condition, ModelInfo, SRDenoiser

_ARCHS: dict[str, type[SRDenoiser]] = {}
_CONFIGS: dict[str, ModelConfig] = {}


@dataclass(frozen=True)
class ModelConfig:
    """A named architecture configuration with the training schedule it is meant for."""

    name: str
    arch: str
    hparams: dict[str, Any]
    schedule: ScheduleSpec
    description: str
    sampling_steps: int = 100
    """Default number of (respaced) sampling steps."""
    tags: tuple[str, ...] = field(default_factory=tuple)


def register_arch(cls: type[SRDenoiser]) -> type[SRDenoiser]:
    """Class decorator: make an architecture buildable by its ``arch`` name."""
    _ARCHS[cls.arch] = cls
    return cls


def register_config(config: ModelConfig) -> ModelConfig:
    if config.name in _CONFIGS:
        raise ValueError(f"model config {config.name!r} is registered twice")
    _CONFIGS[config.name] = config
    return config


def list_configs() -> list[ModelConfig]:
    _load_all()
    return sorted(_CONFIGS.values(), key=lambda c: c.name)


def get_config(name: str) -> ModelConfig:
    _load_all()
    try:
        return _CONFIGS[name]
    except KeyError:
        known = ", ".join(sorted(_CONFIGS))
        raise KeyError(f"unknown model config {name!r}; known configs: {known}") from None


def create_model_from_config(arch: str, hparams: dict[str, Any]) -> SRDenoiser:
    """Build an architecture from its hyperparameters (as stored in checkpoint metadata)."""
    _load_all()
    try:
        cls = _ARCHS[arch]
    except KeyError:
        raise KeyError(f"unknown architecture {arch!r}; known: {', '.join(sorted(_ARCHS))}") from None
    return cls.from_config(dict(hparams))


def create_model(name: str) -> SRDenoiser:
    """Build a randomly initialised model from a registered config name."""
    config = get_config(name)
    return create_model_from_config(config.arch, config.hparams)


def _load_all() -> None:
    # Importing the architecture modules registers them; done lazily to keep `import yoda_sr` light.
    from . import sr3, srdiff  # noqa: F401


__all__ = [
    "Condition",
    "ModelConfig",
    "ModelInfo",
    "SRDenoiser",
    "create_model",
    "create_model_from_config",
    "get_config",
    "list_configs",
    "register_arch",
    "register_config",
]
