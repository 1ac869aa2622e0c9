"""`yoda-sr runs merge`: join the run logs that shards (``upscale --shard I/N``) wrote into one."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import report_error

app = typer.Typer(
    name="runs",
    help="Run logs (yoda-sr-upscale.jsonl): join the logs of shards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.command("merge")
def merge(
    folders: list[Path] = typer.Argument(..., metavar="FOLDER...", help="Output folders holding shard run logs."),
) -> None:
    """Fold each folder's yoda-sr-upscale.I-of-N.jsonl into its yoda-sr-upscale.jsonl (identical lines
    once, ordered by time; safe to run again). The shard logs are kept."""
    from ..jobs.runlogs import merge as merge_folder

    failed = False
    for folder in folders:
        merged = merge_folder(folder)
        for problem in merged.problems:
            report_error(problem)
        failed = failed or bool(merged.problems)
        missing = ""
        if merged.missing_shards:
            missing = f"; no log from shards {', '.join(map(str, merged.missing_shards))} (not run, or nothing to do)"
        logs = len(merged.sources)
        typer.echo(f"{merged.path}: {merged.records} records of {merged.outputs} outputs from {logs} logs{missing}")
    if failed:
        raise typer.Exit(1)
