"""Errors a user can act on: the CLI prints their message as one line, without a traceback.

Messages speak of settings by their library names through ``setting`` (``max_pixels=4096``); the
CLI installs ``name_settings`` at start-up so the same messages name its flags (``--max-pixels 4096``).
Only ``cli/`` knows flags.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class YodaError(Exception):
    """A problem with the user's input or environment; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class RequestError(YodaError):
    """What was asked for cannot be done as asked: a name that does not exist, a file that is not what
    it should be, settings that do not fit the model (exit code 2, before any work is done)."""

    exit_code = 2


class SettingError(RequestError, ValueError):
    """A setting's value is out of range. ``setting`` names it (``"steps"``, ``"tile_overlap"``), so
    the CLI can name its flag; the message is in the library's words and does not name a flag."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


def _library_name(name: str, value: str | None) -> str:
    return name if value is None else f"{name}={value}"


_naming: Callable[[str, str | None], str] = _library_name


def setting(name: str, value: object = None) -> str:
    """A setting (with a value for it) as a message names it: ``max_pixels=4096`` in the library, the
    flag (``--max-pixels 4096``) once the CLI has called ``name_settings``."""
    return _naming(name, None if value is None else str(value))


def name_settings(naming: Callable[[str, str | None], str]) -> None:
    """Name settings in messages by ``naming(name, value or None)`` from now on (the CLI's flags)."""
    global _naming
    _naming = naming


def checked(setting: str, check: Callable[[T], T], value: T) -> T:
    """``check(value)``, its ValueError raised again as a SettingError naming ``setting``."""
    try:
        return check(value)
    except ValueError as error:
        raise SettingError(setting, str(error)) from None
