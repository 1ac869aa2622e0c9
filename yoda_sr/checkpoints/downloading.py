"""Fetching registry entries: Hugging Face sources through ``huggingface_hub`` (so ``HF_HOME``,
``HF_HUB_CACHE``, ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` apply), URL sources through our own HTTP
client with Range resume; every file is hash-checked before it is converted into the store."""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import YodaError, setting
from ..weights_file import sha256_file
from .importing import DamagedSourceError, install_converted
from .paths import download_path
from .registry import Entry, embedded_path, get_entry
from .store import (
    ChecksumError,
    NotInstalledError,
    check_source_hash,
    installed_path,
    is_installed,
    manual_download_error,
)

_CHUNK = 1 << 20
_TRUE = ("1", "ON", "YES", "TRUE")


def _progress(total: int | None, initial: int, label: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=label,
        file=sys.stderr,
        disable=not enabled or not sys.stderr.isatty(),
        leave=False,
    )


def download_url(url: str, destination: Path, *, attempts: int = 3, progress: bool = True, timeout: float = 30) -> Path:
    """Download ``url`` to ``destination``, resuming a partial ``.part`` file with HTTP Range.

    A dropped connection is retried (``attempts`` times in all), each retry resuming where the last
    stopped; if every attempt fails the partial file stays, so running again resumes it.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    last_error: Exception | None = None
    for attempt in range(attempts):
        have = partial.stat().st_size if partial.exists() else 0
        request = urllib.request.Request(url, headers={"User-Agent": f"yoda-sr/{__version__}"})
        if have:
            request.add_header("Range", f"bytes={have}-")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if have and response.status == 206 and _range_start(response.headers) != have:
                    # a 206 that does not continue where our file ends would splice two transfers
                    partial.unlink(missing_ok=True)
                    last_error = ConnectionError("the server answered the resume with another byte range")
                    continue
                if have and response.status != 206:
                    have = 0  # the server ignored the range: start over
                length = response.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                with (
                    open(partial, "ab" if have else "wb") as handle,
                    _progress(total, have, destination.name, progress) as bar,
                ):
                    while chunk := response.read(_CHUNK):
                        handle.write(chunk)
                        bar.update(len(chunk))
                size = partial.stat().st_size
                if total is not None and size != total:
                    raise ConnectionError(f"transfer ended at {size} of {total} bytes")
            os.replace(partial, destination)
            return destination
        except urllib.error.HTTPError as error:
            if error.code == 416 and have:  # our partial file is already complete or wrong: restart
                partial.unlink(missing_ok=True)
                last_error = error
                continue
            raise YodaError(f"download of {url} failed: HTTP {error.code} {error.reason}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as error:
            last_error = error
        except Exception as error:  # http.client.IncompleteRead and friends are not OSErrors
            if type(error).__module__ != "http.client":
                raise
            last_error = error
        if attempt + 1 < attempts:
            time.sleep(min(2.0**attempt * 0.2, 2.0))
    have = partial.stat().st_size if partial.exists() else 0
    reason = getattr(last_error, "reason", None) or last_error
    raise YodaError(f"download of {url} failed ({reason}); {have} bytes are kept in {partial} and the next run resumes")


def _range_start(headers: Any) -> int | None:
    """The first byte of a ``Content-Range: bytes START-END/TOTAL`` answer, or None."""
    text = str(headers.get("Content-Range") or "").strip()
    unit, _, span = text.partition(" ")
    start = span.partition("-")[0]
    return int(start) if unit == "bytes" and start.isdecimal() else None


def _offline(offline: bool) -> bool:
    """Whether downloads are off: the flag, or HF_HUB_OFFLINE as huggingface_hub or the environment says."""
    from huggingface_hub import constants

    return offline or bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE


def _hf_fetch(entry: Entry, offline: bool) -> Path:
    """The entry's file via ``hf_hub_download`` at the pinned revision (cache first)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    source = entry.source
    unreachable: str | None = None
    hint = ""
    if source.repo is None or source.filename is None:
        raise YodaError(f"{entry.name}: a Hugging Face source needs a repo and a filename")
    if not offline:
        unreachable = _unreachable_endpoint()
        if unreachable is not None:
            # huggingface_hub would retry with backoff for half a minute; the cache can still answer
            offline = True
            hint = f"cannot reach {unreachable}"
    try:
        return Path(
            hf_hub_download(
                repo_id=source.repo,
                filename=source.filename,
                revision=source.revision,
                local_files_only=offline,
            )
        )
    except LocalEntryNotFoundError:
        if offline and unreachable is not None:
            raise YodaError(
                f"{entry.name} is not in the local cache and the Hub is out of reach ({hint}); "
                "check the network or HF_ENDPOINT, or copy the file and `yoda-sr checkpoints import` it"
            ) from None
        if offline:
            raise NotInstalledError(
                f"{entry.name} is not in the local cache and downloads are off ({setting('offline')} or "
                "HF_HUB_OFFLINE=1); "
                f"run `yoda-sr checkpoints download {entry.name}` on a machine with network"
            ) from None
        raise YodaError(
            f"could not reach the Hugging Face Hub for {entry.name} ({source.describe()}); "
            "check the network or HF_ENDPOINT, or copy the file and `yoda-sr checkpoints import` it"
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as error:
        raise YodaError(f"{entry.name}: the Hub has no {source.describe()} ({type(error).__name__})") from None


def _unreachable_endpoint(timeout: float = 3.0) -> str | None:
    """The Hub endpoint and why, when a TCP connection to it fails at once; None when it connects."""
    import socket

    from huggingface_hub import constants

    parts = urllib.parse.urlsplit(constants.ENDPOINT)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        return f"{constants.ENDPOINT}: {error.strerror or error}"
    return None


def _elsewhere(entry: Entry, filename: str) -> str:
    """How to get an entry's source file without network here (its ``fetch`` command), or ''."""
    if not entry.fetch:
        return ""
    return (
        f"; or, on a machine with network, `{entry.fetch}`, copy {filename} here and run "
        f"`yoda-sr checkpoints import {filename} --name {entry.name}`"
    )


def _remove_hf_file(path: Path) -> None:
    """Delete a cached Hub file: the snapshot link and the blob it points to."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    if blob != path:
        blob.unlink(missing_ok=True)


def download(name: str, *, offline: bool = False, force: bool = False, progress: bool = True) -> Path:
    """Fetch, verify and install a registry entry; returns its ready file. Cached unless ``force``."""
    entry = get_entry(name)
    kind = entry.source.kind
    if entry.embedded:
        path = embedded_path(entry)
        if entry.sha256 and sha256_file(path) != entry.sha256:
            raise ChecksumError(f"{name}: the embedded file {path} does not match its sha256; reinstall yoda-sr")
        return path
    if is_installed(name) and not force:
        return installed_path(name)
    if kind == "manual":
        raise manual_download_error(entry)
    offline = _offline(offline)
    if kind == "hf":
        hub_file = _hf_fetch(entry, offline)
        actual = sha256_file(hub_file)
        check_source_hash(entry, hub_file, actual, lambda: _remove_hf_file(hub_file), replace_pin=force)
        try:
            return install_converted(entry, hub_file, actual, entry.source.revision, repin=force)
        except DamagedSourceError:
            _remove_hf_file(hub_file)
            raise
    url = entry.source.url
    if url is None:
        raise YodaError(f"{name}: a URL source needs a url")
    filename = Path(urllib.parse.urlparse(url).path).name
    if offline:
        raise NotInstalledError(
            f"{name} is not downloaded and downloads are off ({setting('offline')} or HF_HUB_OFFLINE=1); "
            f"run `yoda-sr checkpoints download {name}` with network{_elsewhere(entry, filename)}"
        )
    raw = download_path(name, filename)
    try:
        download_url(url, raw, progress=progress)
    except YodaError as error:
        raise YodaError(f"{error}{_elsewhere(entry, filename)}") from None
    actual = sha256_file(raw)
    check_source_hash(entry, raw, actual, lambda: raw.unlink(missing_ok=True), replace_pin=force)
    try:
        return install_converted(entry, raw, actual, None, repin=force)
    finally:
        raw.unlink(missing_ok=True)
