"""yoda-sr: diffusion super-resolution that diffuses only where it matters (YODA).

Importing the package is cheap; torch is imported by the modules that need it. The library's
façade is importable from here: ``from yoda_sr import Upscaler, Settings``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .api import Resolved, Result, Settings, Upscaler

__all__ = ["Resolved", "Result", "Settings", "Upscaler", "__version__"]


def __getattr__(name: str) -> Any:
    """``Upscaler``, ``Settings``, ``Resolved`` and ``Result`` load ``yoda_sr.api`` (and torch) on first use."""
    if name in ("Resolved", "Result", "Settings", "Upscaler"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'yoda_sr' has no attribute {name!r}")
