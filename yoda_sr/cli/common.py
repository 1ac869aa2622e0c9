"""What every command shares: the root --debug flag, and remarks and failure lines on stderr."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
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


_ADVICE = {
    errno.ENOSPC: "free some space, or write elsewhere",
    errno.EDQUOT: "free some space, or write elsewhere",
    errno.EROFS: "write to another folder",
    errno.EACCES: "write to another folder, or fix its permissions",
    errno.EPERM: "write to another folder, or fix its permissions",
    errno.ENAMETOOLONG: "use a shorter name (--suffix, the output's name)",
    errno.ENOTDIR: "a folder on this path is a file; choose another path",
    errno.EEXIST: "choose another path",
}


def os_error_line(error: OSError) -> str:
    """A filesystem failure (full, read-only, a name too long) as one line: the file, why, what to do;
    a file in the checkpoint store names YODA_SR_HOME."""
    from ..checkpoints.paths import home

    where = os.fsdecode(error.filename) if error.filename is not None else ""
    reason = error.strerror or str(error) or type(error).__name__
    advice = _ADVICE.get(error.errno or 0, "check the folder and try again")
    store = str(home())
    if where and (where == store or where.startswith(store.rstrip("/") + "/")):
        advice = f"set YODA_SR_HOME (now {store}) to a writable folder" + (
            f", or {advice}" if error.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        )
    return f"{where}: {reason}; {advice}" if where else f"{reason}; {advice}"


def output_path(value: str | Path) -> Path:
    """An output flag's value as a path; an empty one (``-o ''``) is a usage error, not the
    working folder."""
    if not str(value).strip():
        raise typer.BadParameter("is empty; give a file or folder name")
    return Path(value)


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
        None,
        "--clean",
        metavar="auto|off",
        help="auto: deblock JPEG-compressed and denoise noisy input before upscaling, when found "
        "(docs/method.md §12); off: upscale the input as it is. Default: the model's (auto; off for "
        "imported SR3/SRDiff weights, whose upstream upscaled its input as it is).",
    )


def photo_model_option() -> Any:
    """``--photo-model``, as `upscale` and `evaluate` take it (None: the model's)."""
    return typer.Option(
        None,
        "--photo-model",
        metavar="NAME|off",
        help="The model that upscales JPEG input --clean auto deblocked (a checkpoint name or file); "
        "off: this model upscales everything. Default: the model's (the default's photo model, "
        "yoda-srdiff-x4-photo; off for others).",
    )


def _silent(_: str) -> None:
    pass
