"""`upscale`'s options for work past one machine: ``--files-from``, ``--root`` and ``--shard``, and
their checks before any image is touched."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ..errors import UsageError

if TYPE_CHECKING:
    from ..jobs.shards import Shard


def files_from_option() -> Any:
    return typer.Option(
        None,
        "--files-from",
        metavar="MANIFEST",
        help="Read the images from a file, one path per line (relative to its folder, or absolute; - reads "
        "stdin), instead of INPUT: no folder is walked.",
    )


def root_option() -> Any:
    return typer.Option(
        None,
        "--root",
        metavar="DIR",
        help="With --files-from: the folder whose relative paths name the outputs (mirrored under -o) and "
        "seed the images (default: the manifest's folder); entries outside it fail.",
    )


def shard_option() -> Any:
    return typer.Option(
        None,
        "--shard",
        metavar="I/N|auto|auto/N",
        help="Do only shard I of N (0-based), split by a hash of each image's relative path; auto: I and N of a "
        "Slurm array, auto/N: I of a Slurm array or of a Kubernetes indexed Job (JOB_COMPLETION_INDEX). "
        "Its run log is yoda-sr-upscale.I-of-N.jsonl (`yoda-sr runs merge` joins them).",
    )


def check(inputs: list[Path] | None, files_from: str | None, root: Path | None, shard: str | None) -> Shard | None:
    """Refuse option combinations that cannot work, in one line, before anything is loaded or written;
    the run's shard (None: all images)."""
    from ..jobs.shards import parse_shard

    if files_from is None and not inputs:
        raise UsageError("give INPUT... (image files, folders or globs) or --files-from MANIFEST")
    if files_from is not None and inputs:
        raise UsageError("give INPUT... or --files-from MANIFEST, not both")
    if root is not None and files_from is None:
        raise UsageError("--root goes with --files-from (folders given as INPUT are their own roots)")
    return parse_shard(shard) if shard is not None else None
