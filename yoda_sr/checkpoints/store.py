"""The local store: installed files, the lock file that records them, verification and removal."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RequestError, YodaError
from ..fsutil import atomic_write_bytes
from ..weights_file import sha256_file
from .paths import NAME, lock_path, store_folder, store_path
from .registry import Entry, embedded_path, find_entry, load_registry


class ChecksumError(YodaError):
    """A file's sha256 differs from the expected one; a downloaded file has been removed."""


class NotInstalledError(YodaError):
    """A named checkpoint is not in the local store; the message names the command that gets it."""


def installed_path(name: str) -> Path:
    """Where the ready-to-load file of a (downloaded or imported) checkpoint lives."""
    entry = find_entry(name)
    if entry is not None and entry.embedded:
        return embedded_path(entry)
    return store_path(name)


_LOCK_ADVICE = "remove it, then download or import (replacing) the checkpoints again"


def read_lock() -> dict[str, dict[str, Any]]:
    """The store's record: ``{"installed": {name: {...}}, "pins": {name: {...}}}``.

    Only yoda-sr writes this file, so anything else in it is damage: YodaError naming the file,
    never a record silently dropped (a dropped pin would let another file in under its name).
    """
    path = lock_path()
    try:
        data = json.loads(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError):  # no store (yet), or no usable one: nothing installed
        data = {}
    except (OSError, ValueError) as error:
        raise YodaError(f"{path} is unreadable ({error}); {_LOCK_ADVICE}") from None
    if not isinstance(data, dict):
        raise YodaError(f"{path} is damaged (not a JSON object); {_LOCK_ADVICE}")
    return {"installed": _records(path, data, "installed"), "pins": _records(path, data, "pins")}


def _records(path: Path, data: dict[str, Any], table: str) -> dict[str, dict[str, Any]]:
    """One table of the lock: valid names mapping to objects with a sha256 string."""
    records = data.get(table, {})
    if not isinstance(records, dict):
        raise YodaError(f"{path} is damaged ({table!r} is not an object); {_LOCK_ADVICE}")
    for name, record in records.items():
        if not NAME.fullmatch(name) or not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
            raise YodaError(f"{path} is damaged (its {table!r} record {name[:80]!r} is malformed); {_LOCK_ADVICE}")
    return {name: dict(record) for name, record in records.items()}


@contextmanager
def _updating_lock() -> Iterator[dict[str, dict[str, Any]]]:
    """Read the lock, let the caller change it, write it back atomically."""
    lock = read_lock()
    yield lock
    lock_path().parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(lock_path(), json.dumps(lock, indent=2, sort_keys=True).encode() + b"\n")


def _expected_source_hash(entry: Entry) -> tuple[str | None, str]:
    """The sha256 a source file must have, and where that expectation comes from."""
    if entry.sha256:
        return entry.sha256.lower(), "checkpoints.toml"
    pin = read_lock()["pins"].get(entry.name, {}).get("sha256")
    return pin, "the hash recorded at its first download"


def check_source_hash(
    entry: Entry, path: Path, actual: str, remove: Callable[[], None] | None, *, replace_pin: bool = False
) -> None:
    """ChecksumError (after calling ``remove``) when a source file's sha256 is not the expected one:
    the registry's hash (or its ``inner_sha256``, the weight file inside an archive source), else
    the pin recorded at the entry's first download (trust on first use). ``replace_pin`` accepts a
    file that differs from a first-download pin (never from the registry). ``remove`` is None for a
    file of the user's (an import): it is left alone."""
    expected, origin = _expected_source_hash(entry)
    if replace_pin and not entry.sha256:
        return
    if expected is not None and actual not in (expected, (entry.inner_sha256 or "").lower()):
        if remove is None:
            raise ChecksumError(
                f"{entry.name}: sha256 of {path.name} is {actual}, but {origin} says {expected}; "
                "it is not the file this checkpoint is made from, and nothing was imported"
            )
        remove()
        raise ChecksumError(
            f"{entry.name}: sha256 of the downloaded file is {actual}, but {origin} says {expected}; "
            f"the file was removed ({path.name})"
        )


def record_install(
    name: str, path: Path, source_sha: str | None, revision: str | None, fmt: str, *, repin: bool = False
) -> None:
    """Record an installed file in the lock, pinning the source hash of an entry that has none
    (``repin``: replacing the pin recorded before)."""
    with _updating_lock() as lock:
        entry = find_entry(name)
        if source_sha and (repin or name not in lock["pins"]) and entry is not None and not entry.sha256:
            lock["pins"][name] = {"sha256": source_sha, "revision": revision}
        lock["installed"][name] = {
            "path": str(path),
            "sha256": sha256_file(path),
            "source_sha256": source_sha,
            "revision": revision,
            "format": fmt,
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }


def is_installed(name: str) -> bool:
    """Whether a checkpoint's ready file is present (embedded ones always are)."""
    entry = find_entry(name)
    if entry is not None and entry.embedded:
        return installed_path(name).is_file()
    return name in read_lock()["installed"] and installed_path(name).is_file()


def installed_names() -> list[str]:
    """Names of everything in the local store (registry entries and imports)."""
    return sorted(read_lock()["installed"])


def manual_download_error(entry: Entry) -> NotInstalledError:
    """The error for a manual entry that is not installed: where to get the file, how to import it."""
    file = f" {entry.source.file}" if entry.source.file else " the checkpoint"
    return NotInstalledError(
        f"{entry.name} cannot be downloaded automatically: download{file} from {entry.source.page}, "
        f"then run `yoda-sr checkpoints import FILE --name {entry.name}`"
    )


def require(name: str) -> Path:
    """The ready file of an installed or embedded checkpoint; NotInstalledError naming the fix."""
    if is_installed(name):
        return installed_path(name)
    entry = find_entry(name)
    if entry is None:
        raise RequestError(
            f"no checkpoint named {name!r} (not in the registry, not imported); "
            "`yoda-sr checkpoints list` shows the names, or pass a .safetensors path"
        )
    if entry.source.kind == "manual":
        raise manual_download_error(entry)
    raise NotInstalledError(f"{name} is not downloaded: run `yoda-sr checkpoints download {name}`")


@dataclass(frozen=True)
class Verification:
    """The outcome of re-hashing one checkpoint."""

    name: str
    ok: bool
    message: str


def verify(names: list[str] | None = None) -> list[Verification]:
    """Re-hash installed checkpoints (all of them by default); a bad file is reported and removed."""
    lock = read_lock()
    registry = load_registry()
    if names is None:
        names = sorted(set(lock["installed"]) | {n for n, e in registry.items() if e.embedded})
    results = []
    for name in names:
        entry = registry.get(name)
        if entry is not None and entry.embedded:
            path = installed_path(name)
            ok = path.is_file() and (entry.sha256 is None or sha256_file(path) == entry.sha256)
            results.append(Verification(name, ok, "embedded, sha256 matches" if ok else f"{path} is damaged"))
            continue
        record = lock["installed"].get(name)
        if entry is None and record is None:
            raise RequestError(f"no checkpoint named {name!r}; `yoda-sr checkpoints list` shows them all")
        if record is None or not installed_path(name).is_file():
            results.append(Verification(name, False, "not downloaded"))
            continue
        actual = sha256_file(installed_path(name))
        if actual != record["sha256"]:
            remove(name)
            results.append(Verification(name, False, f"sha256 {actual[:12]}... differs from the recorded one; removed"))
            continue
        results.append(Verification(name, True, f"sha256 {actual[:12]}... matches"))
    return results


def remove(name: str) -> bool:
    """Delete an installed checkpoint's file and record (pins stay). False if it was not installed."""
    entry = find_entry(name)
    if entry is not None and entry.embedded:
        raise RequestError(f"{name} is embedded in the package and cannot be removed")
    path = installed_path(name)
    read_lock()  # a damaged lock stops here, before the file goes
    existed = _delete_store_file(path)
    with _updating_lock() as lock:
        existed = lock["installed"].pop(name, None) is not None or existed
    return existed


def _delete_store_file(path: Path) -> bool:
    """Delete ``path`` only if it is a file the store wrote: a regular .safetensors file directly in
    the store folder (never through a link, never elsewhere). Whether something was deleted."""
    folder = store_folder().resolve()
    if path.suffix != ".safetensors" or path.is_symlink() or not path.is_file():
        return False
    if path.resolve().parent != folder:
        return False
    path.unlink()
    return True
