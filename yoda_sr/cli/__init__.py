"""The `yoda-sr` command line: one module per command that parses options, calls the library and
formats its output. No maths here.

Only Typer is imported at start-up, so `--version` and `--help` answer without loading torch.
``main`` turns a user's error into one `yoda-sr: error: ...` line and an exit code; a library
``SettingError`` is shown under the flag that sets it (``--steps: ...``).
"""

from __future__ import annotations

import sys

import typer
from typer.exceptions import TyperException

from .._version import __version__
from ..errors import SettingError, YodaError, name_settings
from . import attention, checkpoints, evaluate, runs, sample, train, upscale, web
from .common import flag, flag_with_value, os_error_line

__all__ = ["app", "main"]

app = typer.Typer(
    name="yoda-sr",
    help="Diffusion super-resolution that diffuses only where it matters (YODA: You Only Diffuse Areas).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"yoda-sr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """Diffusion super-resolution that diffuses only where it matters (YODA)."""
    name_settings(flag_with_value)  # library messages name settings by their flags from here on


app.command("upscale")(upscale.upscale)
app.command("attention")(attention.attention)
app.command("train")(train.train)
app.command("evaluate")(evaluate.evaluate)
app.command("sample")(sample.sample)
app.command("web")(web.web)
app.add_typer(checkpoints.app, name="checkpoints")
app.add_typer(runs.app, name="runs")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `yoda-sr` console script: user errors become one line and an exit code."""
    from ..runtime.cpu import tune_process

    tune_process()  # the allocator's settings (README, Performance)
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        code = app(args=args, prog_name="yoda-sr", standalone_mode=False)
    except TyperException as error:  # a command-line usage error, from Typer's own Click
        if debug:
            raise
        context = getattr(error, "ctx", None)
        if type(error).__name__ == "NoArgsIsHelpError" and context is not None:
            typer.echo(context.get_help())
            sys.exit(0)
        path = context.command_path if context is not None else "yoda-sr"
        typer.echo(f"yoda-sr: error: {error.format_message()} (see `{path} --help`)", err=True)
        sys.exit(getattr(error, "exit_code", 2))
    except YodaError as error:
        if debug:
            raise
        message = f"{flag(error.setting)}: {error}" if isinstance(error, SettingError) else str(error)
        typer.echo(f"yoda-sr: error: {message}", err=True)
        sys.exit(error.exit_code)
    except OSError as error:  # the filesystem: full, read-only, a name too long, a store that is a file
        if debug:
            raise
        typer.echo(f"yoda-sr: error: {os_error_line(error)}", err=True)
        sys.exit(1)
    except MemoryError as error:  # what the memory checks could not foresee
        if debug:
            raise
        detail = f" ({error})" if str(error) else ""
        typer.echo(
            f"yoda-sr: error: out of memory{detail}; use a smaller --scale or --tile, --stream on, "
            "or a machine (or ulimit -v) with more memory",
            err=True,
        )
        sys.exit(1)
    except ImportError as error:  # a library that cannot load: broken install, or an address-space limit
        if debug:
            raise
        typer.echo(
            f"yoda-sr: error: cannot load a library ({error}); reinstall it, or raise "
            "the address-space limit (ulimit -v) if one is set",
            err=True,
        )
        sys.exit(1)
    except (KeyboardInterrupt, typer.Abort):
        if debug:
            raise
        typer.echo("yoda-sr: interrupted", err=True)
        sys.exit(130)
    if code == 130:  # Typer turns Ctrl-C (KeyboardInterrupt) into Exit(130) before it reaches us
        typer.echo("yoda-sr: interrupted", err=True)
    if isinstance(code, int) and code:
        sys.exit(code)
