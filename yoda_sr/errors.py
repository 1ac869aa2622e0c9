"""Errors a user can act on: the CLI prints their message as one line, without a traceback."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class YodaError(Exception):
    """A problem with the user's input or environment; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class UsageError(YodaError):
    """The command line asks for something impossible (exit code 2)."""

    exit_code = 2


class SettingError(YodaError, ValueError):
    """A setting's value is out of range. ``setting`` names it (``"steps"``, ``"tile_overlap"``), so
    the CLI can name its flag; the message is in the library's words and does not name a flag."""

    exit_code = 2

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


def checked(setting: str, check: Callable[[T], T], value: T) -> T:
    """``check(value)``, its ValueError raised again as a SettingError naming ``setting``."""
    try:
        return check(value)
    except ValueError as error:
        raise SettingError(setting, str(error)) from None
