"""Denoiser architectures and a registry of named configurations.

``create_model("sr3-16-128")`` builds a randomly initialised model from a registered config;
``create_model_from_config(arch, hparams)`` rebuilds one from checkpoint metadata. Each architecture
module registers its class, and ``configs`` the named configurations, in ``_registry`` on import;
importing this package imports them all.
"""

from __future__ import annotations

from typing import Any

from . import configs, sr3, srdiff  # noqa: F401 - importing these modules registers what they define
from ._registry import ARCHS, CONFIGS, ModelConfig, register_arch, register_config
from .base import Condition, ModelInfo, SRDenoiser


def list_configs() -> list[ModelConfig]:
    """Every registered configuration, by name."""
    return sorted(CONFIGS.values(), key=lambda c: c.name)


def get_config(name: str) -> ModelConfig:
    """A registered configuration by name; KeyError naming the known ones."""
    try:
        return CONFIGS[name]
    except KeyError:
        known = ", ".join(sorted(CONFIGS))
        raise KeyError(f"unknown model config {name!r}; known configs: {known}") from None


def create_model_from_config(arch: str, hparams: dict[str, Any]) -> SRDenoiser:
    """Build an architecture from its hyperparameters (as stored in checkpoint metadata)."""
    try:
        cls = ARCHS[arch]
    except KeyError:
        raise KeyError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHS))}") from None
    return cls.from_config(dict(hparams))


def create_model(name: str) -> SRDenoiser:
    """Build a randomly initialised model from a registered config name."""
    config = get_config(name)
    return create_model_from_config(config.arch, config.hparams)


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
