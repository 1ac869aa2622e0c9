"""The `yoda-sr` command line: parses, calls the library, formats output. No maths here.

Only Typer is imported at start-up, so `--version` and `--help` answer without loading torch.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

from ._version import __version__
from .errors import YodaError

app = typer.Typer(
    name="yoda-sr",
    help="Diffusion super-resolution that diffuses only where it matters (YODA: You Only Diffuse Areas).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


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


def _not_built(command: str) -> NoReturn:
    typer.echo(
        f"yoda-sr: '{command}' is not available in yoda-sr {__version__} yet; "
        "see CHANGELOG.md for what this version provides.",
        err=True,
    )
    raise typer.Exit(2)


@app.command(context_settings=_PASS_THROUGH)
def upscale(ctx: typer.Context) -> None:
    """Super-resolve images or folders of images (not built yet)."""
    _not_built("upscale")


@app.command(context_settings=_PASS_THROUGH)
def attention(ctx: typer.Context) -> None:
    """Compute and show YODA attention maps and time-dependent masks (not built yet)."""
    _not_built("attention")


@app.command(context_settings=_PASS_THROUGH)
def train(ctx: typer.Context) -> None:
    """Train or fine-tune a model with YODA masked training (not built yet)."""
    _not_built("train")


@app.command(context_settings=_PASS_THROUGH)
def evaluate(ctx: typer.Context) -> None:
    """Measure PSNR/SSIM/LPIPS of a model against bicubic and plain diffusion (not built yet)."""
    _not_built("evaluate")


@app.command(context_settings=_PASS_THROUGH)
def checkpoints(ctx: typer.Context) -> None:
    """List, download, verify and import pretrained weights (not built yet)."""
    _not_built("checkpoints")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `yoda-sr` console script: user errors become one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        app(args=args, prog_name="yoda-sr", standalone_mode=True)
    except YodaError as error:
        if debug:
            raise
        typer.echo(f"yoda-sr: error: {error}", err=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        if debug:
            raise
        typer.echo("yoda-sr: interrupted", err=True)
        sys.exit(130)
