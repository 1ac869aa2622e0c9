"""What every command shares: the root --debug flag, and remarks and failure lines on stderr."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from ..errors import RequestError


class UsageError(RequestError):
    """The command line asks for something impossible (exit code 2): flags that contradict each other,
    an environment (torchrun's variables) that does not fit. The library raises ``SettingError`` and
    ``RequestError`` instead; only the CLI knows flags."""


def debugging(ctx: typer.Context) -> bool:
    """Whether the root `--debug` flag is set (failures then raise with their traceback)."""
    return bool(ctx.find_root().params.get("debug"))


def note(message: str) -> None:
    """A remark on stderr (skipped files and the like)."""
    typer.echo(f"yoda-sr: {message}", err=True)


def notes(quiet: bool) -> Callable[[str], None]:
    """Where a command's remarks go: stderr, or nowhere under --quiet."""
    return _silent if quiet else note


def report_error(message: str) -> None:
    """One `yoda-sr: error: ...` line on stderr, for a failure the run goes on past."""
    typer.echo(f"yoda-sr: error: {message}", err=True)


def flag(setting: str) -> str:
    """The option that sets a library setting: ``tile_overlap`` -> ``--tile-overlap``."""
    return "--" + setting.replace("_", "-")


def flag_with_value(setting: str, value: str | None) -> str:
    """How messages name a setting on the command line (``errors.name_settings``): ``--max-pixels 4096``."""
    return flag(setting) if value is None else f"{flag(setting)} {value}"


def flat_floor_option() -> Any:
    """``--flat-floor``, as `upscale` and `evaluate` take it (None: the model's)."""
    return typer.Option(
        None,
        "--flat-floor",
        metavar="LEVELS",
        help="LR areas with less detail than this (8-bit levels) keep the base, whatever l says; 0: off "
        "(default: the model's).",
    )


def clean_option() -> Any:
    """``--clean``, as `upscale` and `evaluate` take it."""
    return typer.Option(
        "auto",
        "--clean",
        metavar="auto|off",
        help="auto: deblock JPEG-compressed and denoise noisy input before upscaling, when found "
        "(docs/method.md §12); off: upscale the input as it is.",
    )


def _silent(_: str) -> None:
    pass
