"""The tables architecture modules register into: classes by ``arch`` name, configs by name.

A leaf of ``yoda_sr.models``: ``sr3`` and ``srdiff`` register their classes here, ``configs`` the
named configurations, and the package's ``__init__`` (which imports all three) reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..diffusion.schedules import ScheduleSpec
from .base import SRDenoiser

ARCHS: dict[str, type[SRDenoiser]] = {}
"""Architecture classes by their ``arch`` name."""
CONFIGS: dict[str, ModelConfig] = {}
"""Named configurations by name."""


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
    """Class decorator: make an architecture buildable by its ``arch`` name (once: a second class
    under a name already taken is refused, never silently put in its place)."""
    if cls.arch in ARCHS:
        raise ValueError(
            f"architecture {cls.arch!r} is registered twice ({ARCHS[cls.arch].__qualname__}, {cls.__qualname__})"
        )
    ARCHS[cls.arch] = cls
    return cls


def register_config(config: ModelConfig) -> ModelConfig:
    """Make a named configuration known to ``get_config`` and ``create_model``."""
    if config.name in CONFIGS:
        raise ValueError(f"model config {config.name!r} is registered twice")
    CONFIGS[config.name] = config
    return config
