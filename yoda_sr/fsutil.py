"""Files written whole or not at all.

Every file yoda-sr writes (images, weights, training state, logs' siblings, the checkpoint lock)
goes through ``atomic_write``: the content is written to a hidden temporary file beside the target,
flushed to disk, then renamed over the target in one step, so a reader (or a rerun after a kill)
sees the old file or the new one, never a part. Temporary files carry ``TEMP_MARK`` and the
writer's process id in their name, which is how a later run recognises its own debris
(``remove_stale_temporaries``). ``claim`` lets concurrent runs split one folder's outputs.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMP_MARK = ".yoda-tmp"
"""Every temporary file's name ends with this (``.<target>.<pid>-<token>.yoda-tmp``)."""


NAME_BYTES = 120
"""The most bytes of a target's name that its temporary and claim names keep (file names end at 255)."""


def short_name(name: str, limit: int = NAME_BYTES) -> str:
    """``name`` if it fits in ``limit`` bytes; else its first bytes (whole characters) and a hash of
    the whole name, so that two long names sharing a prefix stay apart."""
    encoded = os.fsencode(name)
    if len(encoded) <= limit:
        return name
    digest = hashlib.sha256(encoded).hexdigest()[:16]
    head = encoded[: limit - len(digest) - 1].decode("utf-8", errors="ignore")
    return f"{head}~{digest}"


def temporary_path(target: Path) -> Path:
    """A fresh hidden name beside ``target`` for a file that will be renamed onto it."""
    return target.with_name(f".{short_name(target.name)}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_MARK}")


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Write a file whole or not at all: ``write`` fills a temporary file, which is fsynced and
    renamed onto ``path``. On any error the temporary file is removed and the error re-raised."""
    target = Path(path)
    temporary = temporary_path(target)
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as error:
        raise _named(error, target) from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise _named(error, target) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target


def _named(error: OSError, target: Path) -> OSError:
    """``error`` naming the file the user asked for, not the hidden temporary one (a full disk, a
    read-only folder)."""
    if error.errno is None:
        return error
    return OSError(error.errno, error.strerror, str(target))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """``atomic_write`` of a byte string."""
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_save(path: str | os.PathLike[str], save: Callable[[Path], object]) -> Path:
    """Like ``atomic_write`` for writers that take a file name (safetensors, ``torch.save``):
    ``save(temporary)`` writes the file, which is then fsynced and renamed onto ``path``."""
    target = Path(path)
    temporary = temporary_path(target)
    try:
        try:
            save(temporary)
        except OSError:
            raise
        except Exception as error:  # noqa: BLE001 - a writer's own error type (safetensors, torch) for a failed write
            raise _as_os_error(error, target) from error
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise _named(error, target) from error
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target


_CODE = re.compile(r"code: (\d+)|errno (\d+)", re.IGNORECASE)


def _as_os_error(error: Exception, target: Path) -> Exception:
    """The OSError behind a writer's failure when it is one (a full disk reported by safetensors as
    ``IoError(Os { code: 28 ...})``, by torch as "file write failed"); else ``error`` itself."""
    text = str(error)
    found = _CODE.search(text)
    code = int(found[1] or found[2]) if found else None
    if code is None and ("No space left" in text or _free_bytes(target.parent) == 0):
        code = errno.ENOSPC
    if code is None:
        return error
    return OSError(code, os.strerror(code), str(target))


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


_TEMPORARY = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}" + re.escape(TEMP_MARK) + "$")
CLAIM_MARK = ".yoda-claim"
"""A claim file ``.<output>.yoda-claim`` holds "<host> <pid>" of the run computing that output; its
modification time is the run's heartbeat."""
HEARTBEAT_SECONDS = 30.0
"""How often a run touches the claims it holds."""
STALE_SECONDS = 600.0
"""A claim whose heartbeat is older than this is taken over, whoever wrote it: its run is gone (on
another host, or in a container whose process ids now name other processes)."""


def _running(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete what writers on this machine left when they were killed: temporary files named by
    ``temporary_path``, and claim files, whose process is gone. Returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    host = socket.gethostname()
    for entry in entries:
        if entry.name.startswith(".") and entry.name.endswith(CLAIM_MARK) and _claim_is_stale(entry, host):
            entry.unlink(missing_ok=True)
            removed.append(entry)
            continue
        match = _TEMPORARY.match(entry.name)
        if match is None or int(match[1]) == os.getpid() or _running(int(match[1])):
            continue
        if entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def claim_path(target: Path) -> Path:
    """Where the claim on ``target`` lives: a hidden file beside it."""
    return target.with_name(f".{short_name(target.name)}{CLAIM_MARK}")


def claim(target: Path) -> Path | None:
    """Claim ``target`` for this process by creating its claim file atomically; None if another live
    process holds it. A claim left by a process on this machine that is gone is taken over."""
    path = claim_path(target)
    host = socket.gethostname()
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except FileExistsError:
            if not _claim_is_stale(path, host):
                return None
            path.unlink(missing_ok=True)
            continue
        try:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(f"{host} {os.getpid()}\n")
        except OSError as error:  # a full disk: no zero-byte claim left behind
            path.unlink(missing_ok=True)
            raise _named(error, target) from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        _HEARTBEAT.hold(path)
        return path
    return None


def _claim_is_stale(path: Path, host: str) -> bool:
    """A claim is stale when its heartbeat is older than ``STALE_SECONDS`` (any host), when its
    process on this machine is gone, or when it is unreadable and a minute old."""
    try:
        text = path.read_text(errors="replace") if not path.is_symlink() else ""
        age = time.time() - path.lstat().st_mtime
    except OSError:
        return False
    if age > STALE_SECONDS:
        return True
    fields = text.split()
    if len(fields) == 2 and fields[1].isdecimal():
        return fields[0] == host and not _running(int(fields[1]))
    return age > 60


def claim_all(targets: list[Path]) -> list[Path] | None:
    """Claim every one of ``targets`` (their folders made as needed), or none: None, with the claims
    made released again, when another live process holds one."""
    held: list[Path] = []
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        path = claim(target)
        if path is None:
            for mine in held:
                release(mine)
            return None
        held.append(path)
    return held


def release(path: Path) -> None:
    """Give up a claim made by ``claim``."""
    _HEARTBEAT.drop(path)
    path.unlink(missing_ok=True)


def temporaries_of(target: Path) -> list[Path]:
    """The temporary files of ``target`` beside it, whatever process made them: for a caller that
    knows their writers are gone (a job stopping workers it killed, perhaps on other machines)."""
    prefix = f".{short_name(target.name)}."
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return []
    pattern = re.compile(r"\d+-[0-9a-f]{8}" + re.escape(TEMP_MARK))
    mine = [entry for entry in entries if entry.name.startswith(prefix)]
    return [entry for entry in mine if pattern.fullmatch(entry.name[len(prefix) :])]


class _Heartbeat:
    """One daemon thread that touches every claim this process holds each ``HEARTBEAT_SECONDS``."""

    def __init__(self) -> None:
        self.held: set[Path] = set()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def hold(self, path: Path) -> None:
        with self.lock:
            self.held.add(path)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._beat, name="yoda-sr claims", daemon=True)
                self.thread.start()

    def drop(self, path: Path) -> None:
        with self.lock:
            self.held.discard(path)

    def _beat(self) -> None:
        while True:
            time.sleep(HEARTBEAT_SECONDS)
            with self.lock:
                held = list(self.held)
            for path in held:
                try:
                    os.utime(path, follow_symlinks=False)
                except OSError:
                    pass


_HEARTBEAT = _Heartbeat()
