"""Files written whole or not at all.

Every file yoda-sr writes (images, weights, training state, logs' siblings, the checkpoint lock)
goes through ``atomic_write``: the content is written to a hidden temporary file beside the target,
flushed to disk, then renamed over the target in one step, so a reader (or a rerun after a kill)
sees the old file or the new one, never a part. Temporary files carry ``TEMP_MARK`` and the
writer's process id in their name, which is how a later run recognises its own debris.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMP_MARK = ".yoda-tmp"
"""Every temporary file's name ends with this (``.<target>.<pid>-<token>.yoda-tmp``)."""


def temporary_path(target: Path) -> Path:
    """A fresh hidden name beside ``target`` for a file that will be renamed onto it."""
    return target.with_name(f".{target.name[:60]}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_MARK}")


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Write a file whole or not at all: ``write`` fills a temporary file, which is fsynced and
    renamed onto ``path``. On any error the temporary file is removed and the error re-raised."""
    target = Path(path)
    temporary = temporary_path(target)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """``atomic_write`` of a byte string."""
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_save(path: str | os.PathLike[str], save: Callable[[Path], object]) -> Path:
    """Like ``atomic_write`` for writers that take a file name (safetensors, ``torch.save``):
    ``save(temporary)`` writes the file, which is then fsynced and renamed onto ``path``."""
    target = Path(path)
    temporary = temporary_path(target)
    try:
        save(temporary)
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target
