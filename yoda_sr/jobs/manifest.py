"""Which images a run works on: a manifest (``--files-from``) instead of walking folders, and this
shard's part of them.

A manifest has one path per line, relative to the manifest's folder (to the current folder for
``-``, standard input) or absolute; blank lines and lines starting with ``#`` are skipped. The
*root* is the folder that entries' relative paths are taken from: ``--root``, or by default the
manifest's folder. An entry's key (its path relative to the root) names its output under ``-o`` and
seeds it, exactly as if the root had been given as a folder to walk, so a manifest run writes the
same bytes as ``upscale ROOT -r``. Paths are compared as written (normalized, symbolic links not
followed). Each problem is one line: an entry outside the root (it would have no key), one that is
missing or not a file (failures), one listed twice (a remark; it is done once).

With a shard, a manifest run touches only its own entries: no folder is listed, and only this
shard's files are looked at.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TextIO, TypeVar

from ..errors import SettingError, setting
from .batch import Batch, Item
from .files import FoundImages, missing_reason
from .shards import Shard, shard_of
from .upscaling import Job, plan_jobs

STDIN = "-"
JobT = TypeVar("JobT", bound=Item)


@dataclass
class Selection:
    """This shard's images, and every path the whole run takes as an input (all shards)."""

    found: FoundImages
    inputs: set[Path] = field(default_factory=set)
    """Absolute, normalized paths of every input of every shard (outputs must not land on them)."""
    problems: list[str] = field(default_factory=list)
    """One failure line each (entries outside the root, missing, not files)."""


def lexical(path: Path) -> Path:
    """``path`` made absolute and normalized without touching the file system."""
    return Path(os.path.normpath(os.path.abspath(path)))


def read_manifest(
    manifest: str, root: Path | None = None, shard: Shard | None = None, stdin: TextIO | None = None
) -> Selection:
    """This shard's entries of a manifest; see the module's docstring."""
    if manifest == STDIN:
        text, base, name = (stdin or sys.stdin).read(), Path(), "stdin"
    else:
        path = Path(manifest)
        try:
            with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
                text = handle.read()
        except OSError as error:
            raise SettingError("files_from", f"{manifest}: cannot read it ({error.strerror or error})") from None
        base, name = path.parent, manifest
    top = lexical(base if root is None else root)
    if root is not None and not top.is_dir():
        raise SettingError("root", f"{root}: not a folder")
    selection = Selection(FoundImages())
    first: dict[Path, int] = {}
    entries = 0
    for number, line in enumerate(text.split("\n"), start=1):
        entry = line.removesuffix("\r")
        if not entry.strip() or entry.startswith("#"):
            continue
        entries += 1
        where = f"{name}:{number}: {entry}"
        image = Path(os.path.normpath(base / entry))
        absolute = lexical(image)
        if top != absolute and top not in absolute.parents:
            if shard is None or shard_of(str(absolute), shard.count) == shard.index:
                shown = "the manifest's folder" if root is None else setting("root")
                selection.problems.append(
                    f"{where}: outside the root {top} ({shown}); give {setting('root')} or fix the path"
                )
            continue
        key = absolute.relative_to(top).as_posix()
        mine = shard is None or shard.owns(key)
        if absolute in first:
            if mine:
                selection.found.notes.append(f"{where}: listed again (first on line {first[absolute]}); done once")
            continue
        first[absolute] = number
        selection.inputs.add(absolute)
        if not mine:
            continue
        if image.is_file():
            selection.found.images.append((image, Path(PurePosixPath(key).parent)))
        elif image.is_dir():
            selection.problems.append(f"{where}: is a folder; a manifest lists image files")
        else:
            selection.problems.append(f"{where}: {missing_reason(image)}")
    if not entries:
        raise SettingError("files_from", f"{manifest}: lists no paths")
    return selection


def select_found(found: FoundImages, shard: Shard | None) -> Selection:
    """The images of walked folders and named files that are this shard's (all without a shard)."""
    inputs = {lexical(image) for image, _ in found.images}
    if shard is not None:
        found.images = [(image, folder) for image, folder in found.images if shard.owns(_key(image, folder))]
    return Selection(found, inputs)


def _key(image: Path, folder: Path) -> str:
    return (folder / image.name).as_posix()


def refuse_listed_outputs(
    jobs: Sequence[JobT], inputs: Iterable[Path], fail: Callable[[str], None], hint: str = ""
) -> list[JobT]:
    """Jobs whose outputs are no input of the whole run; the others fail, one line each.

    A shard sees only its own inputs, so the batch's own check cannot see an output landing on
    another shard's input: this compares against every shard's (paths as written)."""
    listed = set(inputs)
    kept: list[JobT] = []
    for job in jobs:
        clash = next((output for output in job.outputs if lexical(output) in listed), None)
        if clash is None:
            kept.append(job)
            continue
        suffix = f" ({hint})" if hint else ""
        fail(f"{job.image}: its output {clash} is an input image; refusing to overwrite it{suffix}")
    return kept


def select_images(
    batch: Batch[Any],
    inputs: Sequence[Path],
    *,
    files_from: str | None = None,
    root: Path | None = None,
    shard: Shard | None = None,
    recursive: bool = False,
    ignore_endings: tuple[str, ...] = (),
    exclude: Sequence[Path] = (),
) -> Selection:
    """This shard's images of a manifest, or of files, folders and globs (``Batch.find``); the
    manifest's problems are the batch's failures, its remarks the batch's notes."""
    if files_from is None:
        return select_found(batch.find(inputs, recursive, ignore_endings=ignore_endings, exclude=exclude), shard)
    selection = read_manifest(files_from, root, shard)
    for text in selection.found.notes:
        batch.note(text)
    for text in selection.problems:
        batch.fail(text)
    return selection


def plan_selection(
    batch: Batch[Job], selection: Selection, out: Path | None, suffix: str, fmt: str, sharded: bool, hint: str = ""
) -> list[Job]:
    """The selection's jobs that have work to do (``upscaling.plan_jobs``, then ``Batch.plan``); with
    shards, outputs landing on another shard's input fail too (``refuse_listed_outputs``)."""
    jobs = plan_jobs(selection.found, out, suffix, fmt)
    if sharded:
        jobs = refuse_listed_outputs(jobs, selection.inputs, batch.fail, hint)
    return batch.plan(jobs)
