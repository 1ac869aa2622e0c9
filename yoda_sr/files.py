"""Finding the images a command works on: files, folders and sub-folders, with notes on what is skipped."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

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
    arguments: Iterable[Path], recursive: bool = False, ignore_endings: tuple[str, ...] = ()
) -> FoundImages:
    """Expand command-line paths into images.

    Named files are taken whatever their extension (their content decides later). In folders only
    image extensions are taken, in sorted order; other files get a note, hidden entries and names
    ending in ``ignore_endings`` (a command's own outputs) are skipped silently.
    """
    found = FoundImages()
    for argument in arguments:
        if argument.is_file():
            found.images.append((argument, Path()))
            continue
        if not argument.is_dir():
            found.missing.append(argument)
            continue
        for entry in sorted(argument.rglob("*") if recursive else argument.iterdir()):
            relative = entry.relative_to(argument)
            if any(part.startswith(".") for part in relative.parts):
                continue
            if entry.is_dir():
                if not recursive:
                    found.notes.append(f"skipped folder {entry} (use --recursive)")
                continue
            if entry.name.lower().endswith(ignore_endings):
                continue
            if entry.suffix.lower() not in IMAGE_EXTENSIONS:
                found.notes.append(f"skipped {entry}: not an image")
                continue
            found.images.append((entry, relative.parent))
    return found


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
