"""Finding the images a command works on: files, folders and sub-folders, with notes on what is skipped."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import setting

IMAGE_EXTENSIONS = frozenset(
    (".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
    + (".pnm", ".gif", ".tga")
)
"""File extensions (compared case-insensitively) that a folder's images may have."""


@dataclass
class FoundImages:
    """Images to process, each with its folder relative to the argument it came from."""

    images: list[tuple[Path, Path]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Remarks on skipped entries (not images, sub-folders without recursion)."""
    missing: list[Path] = field(default_factory=list)
    """Arguments that are neither a file nor a folder."""


def find_images(
    arguments: Iterable[Path],
    recursive: bool = False,
    ignore_endings: tuple[str, ...] = (),
    exclude: Iterable[Path] = (),
) -> FoundImages:
    """Expand command-line paths into images.

    Named files are taken whatever their extension (their content decides later). In folders only
    image extensions are taken, in sorted order; other files get a note, hidden entries and names
    ending in ``ignore_endings`` (a command's own outputs) are skipped silently, and so is anything
    inside an ``exclude`` folder (a command's output folder). Folders reached twice through symbolic
    links are listed once, with a note.
    """
    found = FoundImages()
    excluded = [folder.resolve() for folder in exclude]
    for argument in arguments:
        if argument.is_file():
            found.images.append((argument, Path()))
            continue
        if not argument.is_dir():
            found.missing.append(argument)
            continue
        for entry in _walk(argument, recursive, excluded, found.notes):
            if entry.name.lower().endswith(ignore_endings):
                continue
            if entry.suffix.lower() not in IMAGE_EXTENSIONS:
                found.notes.append(f"skipped {entry}: not an image")
                continue
            found.images.append((entry, entry.parent.relative_to(argument)))
    return found


def _inside(path: Path, folders: list[Path]) -> bool:
    target = resolved(path)
    return any(target == folder or folder in target.parents for folder in folders)


def resolved(path: Path) -> Path:
    """``path.resolve()``, or its absolute form for a symbolic link that loops (which reading then
    reports), so that comparing paths never fails."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError before Python 3.13
        return path.absolute()


def missing_reason(path: Path) -> str:
    """Why a path is neither a file nor a folder, and what to do, for an error line."""
    if path.is_symlink():
        return "is a symbolic link that loops or points to nothing; fix or remove the link"
    return "no such file or folder"


def _walk(top: Path, recursive: bool, excluded: list[Path], notes: list[str]) -> list[Path]:
    """The non-hidden files below ``top`` (sorted), descending into sub-folders if ``recursive``."""
    files: list[Path] = []
    visited: set[tuple[int, int]] = set()
    pending = [top]
    while pending:
        folder = pending.pop()
        try:
            status = folder.stat()
            entries = sorted(folder.iterdir())
        except OSError as error:
            notes.append(f"skipped folder {folder}: cannot list it ({error.strerror or error})")
            continue
        if (status.st_dev, status.st_ino) in visited:
            notes.append(f"skipped folder {folder}: already listed (a symbolic link loops back)")
            continue
        visited.add((status.st_dev, status.st_ino))
        for entry in entries:
            if entry.name.startswith(".") or (excluded and _inside(entry, excluded)):
                continue
            if entry.is_dir():
                if recursive:
                    pending.append(entry)
                else:
                    notes.append(f"skipped folder {entry} (use {setting('recursive')})")
                continue
            files.append(entry)
    return sorted(files)


def expand_globs(arguments: Iterable[Path]) -> list[Path]:
    """Expand glob patterns the shell left alone (quoted, or on Windows); a pattern matching
    nothing stays as it is (and is then reported missing)."""
    expanded: list[Path] = []
    for argument in arguments:
        text = str(argument)
        matches = sorted(glob.glob(text, recursive=True)) if any(char in text for char in "*?[") else []
        if matches and not argument.exists():
            expanded.extend(Path(match) for match in matches)
        else:
            expanded.append(argument)
    return expanded
