"""The models the page offers (named on the command line, installed or embedded), and the one
loaded ``Upscaler`` it keeps.

The page shows names only: a model file named on the command line appears under its file name (or
its run folder's name), and the page can choose only among these names, never pass a path.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SettingError

if TYPE_CHECKING:
    from .library import Upscaler


@dataclass(frozen=True)
class ModelDefaults:
    """What a model samples with when a setting is left to it (its metadata), for the page's form."""

    scale: int
    steps: int
    max_steps: int
    sampler: str
    samplers: tuple[str, ...]
    eta: float
    attention: str
    lower_bound: float
    flat_floor: float
    clean: str = "auto"
    photo_model: str = "off"


def _registry_denoisers() -> list[str]:
    """Denoisers of the registry that are installed or embedded, and imported denoisers, by name."""
    from .library import installed_names, installed_path, is_installed, load_registry

    names: list[str] = []
    registry = load_registry()
    for name, entry in registry.items():
        if entry.kind == "denoiser" and is_installed(name):
            names.append(name)
    for name in installed_names():
        if name not in registry and _is_denoiser(installed_path(name)):
            names.append(name)
    return names


def _is_denoiser(path: Path) -> bool:
    from .library import read_metadata

    try:
        return read_metadata(path).get("kind") == "denoiser"
    except Exception:  # an unreadable file is not offered; loading it would say why
        return False


class Models:
    """Model choices by label, and a cache of one loaded upscaler (loading takes a lock)."""

    def __init__(self, named: Sequence[str] = (), *, device: str = "auto", dtype: str = "auto") -> None:
        from .library import DEFAULT_MODEL, resolve_model_file

        self.device, self.dtype = device, dtype
        self.sources: dict[str, str] = {}
        """label -> what ``Upscaler.from_pretrained`` takes (a name, or a path named on the command line)."""
        for value in named:
            path, name = resolve_model_file(value)
            label = name if name not in self.sources else f"{name} ({path.name})"
            if label in self.sources:
                raise SettingError("model", f"{value}: named twice")
            self.sources[label] = value
        for name in _registry_denoisers():
            self.sources.setdefault(name, name)
        if not self.sources:
            self.sources[DEFAULT_MODEL] = DEFAULT_MODEL
        self.default = next(iter(self.sources)) if named else _first(self.sources, DEFAULT_MODEL)
        self._lock = threading.Lock()
        self._loaded: tuple[str, Upscaler] | None = None

    @property
    def labels(self) -> list[str]:
        """The choices, the default first."""
        return [self.default, *(label for label in self.sources if label != self.default)]

    def get(self, label: str | None) -> Upscaler:
        """The upscaler of a label (loaded once; another label replaces it)."""
        from .library import Upscaler

        label = label or self.default
        if label not in self.sources:
            raise SettingError("model", f"unknown model {label!r}; choose one of {', '.join(self.labels)}")
        with self._lock:
            if self._loaded is None or self._loaded[0] != label:
                self._loaded = None  # let the previous model go before the next one loads
                upscaler = Upscaler.from_pretrained(self.sources[label], device=self.device, dtype=self.dtype)
                self._loaded = (label, upscaler)
            return self._loaded[1]

    def defaults(self, label: str | None) -> ModelDefaults:
        """The model's sampling defaults (loads it)."""
        upscaler = self.get(label)
        settings = upscaler.defaults
        assert settings.steps is not None and settings.sampler is not None and settings.eta is not None
        assert settings.attention is not None and settings.lower_bound is not None
        return ModelDefaults(
            scale=upscaler.scale,
            steps=settings.steps,
            max_steps=upscaler.schedule_spec.steps,
            sampler=settings.sampler,
            samplers=tuple(upscaler.samplers),
            eta=settings.eta,
            attention=settings.attention,
            lower_bound=settings.lower_bound,
            flat_floor=float(settings.flat_floor or 0.0),
            clean=settings.clean or "auto",
            photo_model=settings.photo_model or "off",
        )


def _first(sources: dict[str, str], preferred: str) -> str:
    return preferred if preferred in sources else next(iter(sources))
