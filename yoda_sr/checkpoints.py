"""Named checkpoints: the ``checkpoints.toml`` registry, verified downloads, a local store, loading.

Every command gets weights through here (``--model NAME|PATH``, DINO attention weights). The store
lives in ``$YODA_SR_HOME`` (default ``~/.cache/yoda-sr``):

- ``checkpoints/<name>.safetensors``: ready-to-load weights in yoda-sr's format (METHOD.md §8),
  converted from upstream files, imported by the user, or linked from the Hugging Face cache;
- ``downloads/``: partial URL downloads (``*.part``), kept so an interrupted transfer resumes;
- ``checkpoints.lock.json``: what is installed (file, sha256, source hash, revision) and the *pins*:
  the source sha256 recorded on first download of an entry with no hash in the registry, enforced on
  every later download (trust on first use). ``remove`` keeps pins.

Hugging Face sources go through ``huggingface_hub.hf_hub_download`` (so ``HF_HOME``,
``HF_HUB_CACHE``, ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` apply); URL sources through our own HTTP
client with resume. Each file's sha256 is checked after every download and by ``verify``; a file
that fails is removed. Nothing is ever downloaded implicitly: loading a missing checkpoint names the
command that fetches it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ._version import __version__
from .errors import UsageError, YodaError
from .fsutil import atomic_save, atomic_write_bytes, temporary_path

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SOURCE_KINDS = ("hf", "url", "manual", "embedded")
KINDS = ("denoiser", "attention")
METADATA_KEY = "yoda_sr"
"""The safetensors ``__metadata__`` key whose value is yoda-sr's JSON metadata."""
FORMAT_VERSION = 1
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_CHUNK = 1 << 20


class ChecksumError(YodaError):
    """A file's sha256 differs from the expected one; the file has been removed."""


class NotInstalledError(YodaError):
    """A named checkpoint is not in the local store; the message names the command that gets it."""


# --- registry -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where an entry's file comes from (see the comment block at the top of checkpoints.toml)."""

    kind: str
    repo: str | None = None
    filename: str | None = None
    revision: str | None = None
    url: str | None = None
    page: str | None = None
    file: str | None = None
    path: str | None = None

    def describe(self) -> str:
        if self.kind == "hf":
            return f"hf://{self.repo}/{self.filename}@{self.revision}"
        if self.kind == "url":
            return str(self.url)
        if self.kind == "manual":
            return f"manual: {self.file} from {self.page}" if self.file else f"manual: {self.page}"
        return f"embedded: yoda_sr/{self.path}"


@dataclass(frozen=True)
class Entry:
    """One named checkpoint of the registry."""

    name: str
    kind: str
    format: str
    source: Source
    description: str
    licence: str
    page: str
    sha256: str | None = None
    size: str | None = None
    arch: str | None = None
    config: str | None = None
    scale: int | None = None
    method: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        source = {key: value for key, value in vars(self.source).items() if value is not None}
        data = {key: value for key, value in vars(self).items() if key not in ("source", "extra")}
        return {**data, "source": source, **self.extra}


def registry_path() -> Path:
    """The registry shipped with the package (a copy of the repository's top-level file)."""
    return Path(str(resources.files("yoda_sr") / "checkpoints.toml"))


def _parse_entry(name: str, table: dict[str, Any], where: Path) -> Entry:
    def need(key: str) -> Any:
        if key not in table:
            raise ValueError(f"{where}: entry {name!r} has no {key!r}")
        return table[key]

    source_table = dict(need("source"))
    kind = source_table.pop("kind", None)
    if kind not in SOURCE_KINDS:
        raise ValueError(f"{where}: entry {name!r} has source kind {kind!r}; expected one of {SOURCE_KINDS}")
    required = {"hf": ("repo", "filename", "revision"), "url": ("url",), "manual": ("page",), "embedded": ("path",)}
    for key in required[kind]:
        if not source_table.get(key):
            raise ValueError(f"{where}: entry {name!r}: a {kind} source needs {key!r}")
    source = Source(kind=kind, **source_table)
    if table.get("kind") not in KINDS:
        raise ValueError(f"{where}: entry {name!r} has kind {table.get('kind')!r}; expected one of {KINDS}")
    known = {f for f in Entry.__dataclass_fields__ if f not in ("name", "source", "extra")}
    values = {key: value for key, value in table.items() if key in known}
    extra = {key: value for key, value in table.items() if key not in known and key != "source"}
    for key in ("format", "description", "licence", "page"):
        need(key)
    return Entry(name=name, source=source, extra=extra, **values)


@lru_cache(maxsize=8)
def _load_registry(path: Path, modified_ns: int) -> dict[str, Entry]:
    with open(path, "rb") as handle:
        data = tomllib.load(handle)
    return {name: _parse_entry(name, table, path) for name, table in data.items()}


def user_registry_path() -> Path:
    """Extra entries of this machine's own: ``$YODA_SR_HOME/checkpoints.toml`` (same format)."""
    return home() / "checkpoints.toml"


def load_registry(path: str | Path | None = None) -> dict[str, Entry]:
    """Every entry by name: the package's registry plus the user's (``user_registry_path``).

    A user entry may not reuse a package entry's name. With ``path``, only that file is read.
    """
    if path is not None:
        path = Path(path)
        return dict(_load_registry(path, path.stat().st_mtime_ns))
    package = registry_path()
    registry = dict(_load_registry(package, package.stat().st_mtime_ns))
    user = user_registry_path()
    if user.is_file():
        try:
            extra = _load_registry(user, user.stat().st_mtime_ns)
        except (ValueError, tomllib.TOMLDecodeError) as error:
            raise YodaError(f"{user}: {error}") from None
        clash = sorted(set(extra) & set(registry))
        if clash:
            raise YodaError(f"{user} redefines {', '.join(clash)}, which the package registry defines")
        registry.update(extra)
    return registry


def get_entry(name: str) -> Entry:
    """A registry entry by name; UsageError naming close matches when there is none."""
    registry = load_registry()
    if name in registry:
        return registry[name]
    close = difflib.get_close_matches(name, list(registry), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UsageError(f"no checkpoint named {name!r}{hint}; `yoda-sr checkpoints list` shows them all")


# --- local store ----------------------------------------------------------------------------------


def home() -> Path:
    """``$YODA_SR_HOME``, default ``~/.cache/yoda-sr``."""
    return Path(os.environ.get("YODA_SR_HOME") or Path.home() / ".cache" / "yoda-sr").expanduser()


def installed_path(name: str) -> Path:
    """Where the ready-to-load file of a (downloaded or imported) checkpoint lives."""
    if name in load_registry() and get_entry(name).source.kind == "embedded":
        return Path(str(resources.files("yoda_sr") / get_entry(name).source.path))
    return home() / "checkpoints" / f"{name}.safetensors"


def _lock_path() -> Path:
    return home() / "checkpoints.lock.json"


def read_lock() -> dict[str, dict[str, Any]]:
    """The store's record: ``{"installed": {name: {...}}, "pins": {name: {...}}}``."""
    try:
        data = json.loads(_lock_path().read_text())
    except FileNotFoundError:
        data = {}
    except (OSError, json.JSONDecodeError) as error:
        raise YodaError(f"{_lock_path()} is unreadable ({error}); remove it and download again") from None
    return {"installed": dict(data.get("installed", {})), "pins": dict(data.get("pins", {}))}


@contextmanager
def _updating_lock() -> Iterator[dict[str, dict[str, Any]]]:
    """Read the lock, let the caller change it, write it back atomically."""
    lock = read_lock()
    yield lock
    _lock_path().parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(_lock_path(), json.dumps(lock, indent=2, sort_keys=True).encode() + b"\n")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _expected_source_hash(entry: Entry) -> tuple[str | None, str]:
    """The sha256 a source file must have, and where that expectation comes from."""
    if entry.sha256:
        return entry.sha256.lower(), "checkpoints.toml"
    pin = read_lock()["pins"].get(entry.name, {}).get("sha256")
    return pin, "the hash recorded at its first download"


def _check_source_hash(entry: Entry, path: Path, actual: str, remove: Callable[[], None]) -> None:
    expected, origin = _expected_source_hash(entry)
    if expected is not None and actual != expected:
        remove()
        raise ChecksumError(
            f"{entry.name}: sha256 of the downloaded file is {actual}, but {origin} says {expected}; "
            f"the file was removed ({path.name})"
        )


# --- safetensors with metadata --------------------------------------------------------------------


def save(path: str | Path, tensors: dict[str, Any], metadata: dict[str, Any]) -> Path:
    """Write tensors and yoda-sr metadata (JSON under ``__metadata__['yoda_sr']``) atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    full = {"format_version": FORMAT_VERSION, "yoda_sr_version": __version__, **metadata}
    contiguous = {key: value.detach().to("cpu").contiguous() for key, value in tensors.items()}
    header = {METADATA_KEY: json.dumps(full, sort_keys=True)}
    return atomic_save(path, lambda temporary: save_file(contiguous, str(temporary), metadata=header))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """yoda-sr's metadata of a safetensors file ({} when it has none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
        raise YodaError(f"{path} is not a readable safetensors file: {error}") from None
    return json.loads(raw) if raw else {}


# --- downloads ------------------------------------------------------------------------------------


def _progress(total: int | None, initial: int, label: str, enabled: bool):
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
            # http.client.IncompleteRead is an OSError-free HTTPException: caught below.
            last_error = error
        except Exception as error:  # http.client.IncompleteRead and friends
            if type(error).__module__ != "http.client":
                raise
            last_error = error
        if attempt + 1 < attempts:
            time.sleep(min(2.0**attempt * 0.2, 2.0))
    have = partial.stat().st_size if partial.exists() else 0
    reason = getattr(last_error, "reason", None) or last_error
    raise YodaError(f"download of {url} failed ({reason}); {have} bytes are kept in {partial} and the next run resumes")


def _offline(offline: bool) -> bool:
    from huggingface_hub import constants

    return (
        offline
        or bool(constants.HF_HUB_OFFLINE)
        or os.environ.get("HF_HUB_OFFLINE", "").upper()
        in (
            "1",
            "ON",
            "YES",
            "TRUE",
        )
    )


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
        if offline:
            raise NotInstalledError(
                f"{entry.name} is not in the local cache and downloads are off (--offline or HF_HUB_OFFLINE=1); "
                f"run `yoda-sr checkpoints download {entry.name}` on a machine with network"
            ) from None
        raise YodaError(
            f"could not reach the Hugging Face Hub for {entry.name} ({source.describe()}); "
            "check the network or HF_ENDPOINT, or copy the file and `yoda-sr checkpoints import` it"
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as error:
        raise YodaError(f"{entry.name}: the Hub has no {source.describe()} ({type(error).__name__})") from None


def _remove_hf_file(path: Path) -> None:
    """Delete a cached Hub file: the snapshot link and the blob it points to."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    if blob != path:
        blob.unlink(missing_ok=True)


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(target)
    try:
        os.link(source.resolve(), temporary)
    except OSError:
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def _install_converted(entry: Entry, raw: Path, source_sha: str, revision: str | None) -> Path:
    """Convert (or adopt) a verified source file into the store and record it."""
    from .convert import convert_file

    target = installed_path(entry.name)
    if entry.format in ("safetensors", "timm") and raw.suffix == ".safetensors":
        converted = convert_file(raw, "auto")
        if set(converted.tensors) == set(_safetensors_keys(raw)):
            _link_or_copy(raw, target)
        else:
            save(target, converted.tensors, _entry_metadata(entry, converted.metadata, source_sha))
    else:
        converted = convert_file(raw, entry.format, scale=entry.scale)
        save(target, converted.tensors, _entry_metadata(entry, converted.metadata, source_sha))
    _record_install(entry.name, target, source_sha, revision, entry.format)
    return target


def _safetensors_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return list(handle.keys())


def _entry_metadata(entry: Entry, converted: dict[str, Any], source_sha: str) -> dict[str, Any]:
    from .models import get_config

    metadata = dict(converted)
    if metadata.get("kind") == "denoiser":
        config_name = entry.config or metadata.get("matched_config")
        if config_name and metadata.get("schedule") is None:
            metadata["schedule"] = get_config(config_name).schedule.to_dict()
        if config_name:
            metadata.setdefault("sampling", {"steps": get_config(config_name).sampling_steps, "sampler": "ddpm"})
        metadata["scale"] = entry.scale or _scale_of(metadata)
    metadata["name"] = entry.name
    metadata["source"] = {
        "checkpoint": entry.name,
        "from": entry.source.describe(),
        "page": entry.page,
        "licence": entry.licence,
        "sha256": source_sha,
    }
    return metadata


def _scale_of(metadata: dict[str, Any]) -> int | None:
    hparams = metadata.get("hparams", {})
    return hparams.get("sr_scale") or hparams.get("scale")


def _record_install(name: str, path: Path, source_sha: str | None, revision: str | None, fmt: str) -> None:
    with _updating_lock() as lock:
        if source_sha and name not in lock["pins"] and name in load_registry() and not get_entry(name).sha256:
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
    if name in load_registry() and get_entry(name).source.kind == "embedded":
        return installed_path(name).is_file()
    return name in read_lock()["installed"] and installed_path(name).is_file()


def download(name: str, *, offline: bool = False, force: bool = False, progress: bool = True) -> Path:
    """Fetch, verify and install a registry entry; returns its ready file. Cached unless ``force``."""
    entry = get_entry(name)
    kind = entry.source.kind
    if kind == "embedded":
        path = installed_path(name)
        if entry.sha256 and sha256_file(path) != entry.sha256:
            raise ChecksumError(f"{name}: the embedded file {path} does not match its sha256; reinstall yoda-sr")
        return path
    if is_installed(name) and not force:
        return installed_path(name)
    if kind == "manual":
        file = f" {entry.source.file}" if entry.source.file else " the checkpoint"
        raise NotInstalledError(
            f"{name} cannot be downloaded automatically: download{file} from {entry.source.page}, "
            f"then run `yoda-sr checkpoints import FILE --name {name}`"
        )
    offline = _offline(offline)
    if kind == "hf":
        raw = _hf_fetch(entry, offline)
        actual = sha256_file(raw)
        _check_source_hash(entry, raw, actual, lambda: _remove_hf_file(raw))
        return _install_converted(entry, raw, actual, entry.source.revision)
    if offline:
        raise NotInstalledError(
            f"{name} is not downloaded and downloads are off (--offline or HF_HUB_OFFLINE=1); "
            f"run `yoda-sr checkpoints download {name}` with network"
        )
    url = entry.source.url
    assert url is not None
    raw = home() / "downloads" / name / Path(urllib.request.urlparse(url).path).name
    download_url(url, raw, progress=progress)
    actual = sha256_file(raw)
    _check_source_hash(entry, raw, actual, lambda: raw.unlink(missing_ok=True))
    try:
        return _install_converted(entry, raw, actual, None)
    finally:
        raw.unlink(missing_ok=True)


def require(name: str) -> Path:
    """The ready file of an installed or embedded checkpoint; NotInstalledError naming the fix."""
    if is_installed(name):
        return installed_path(name)
    entry = get_entry(name) if name in load_registry() else None
    if entry is None:
        raise UsageError(
            f"no checkpoint named {name!r} (not in the registry, not imported); "
            "`yoda-sr checkpoints list` shows the names, or pass a .safetensors path"
        )
    if entry.source.kind == "manual":
        return download(name)  # raises with the manual instructions
    raise NotInstalledError(f"{name} is not downloaded: run `yoda-sr checkpoints download {name}`")


@dataclass(frozen=True)
class Verification:
    name: str
    ok: bool
    message: str


def verify(names: list[str] | None = None) -> list[Verification]:
    """Re-hash installed checkpoints (all of them by default); a bad file is reported and removed."""
    lock = read_lock()
    registry = load_registry()
    if names is None:
        names = sorted(set(lock["installed"]) | {n for n, e in registry.items() if e.source.kind == "embedded"})
    results = []
    for name in names:
        entry = registry.get(name)
        if entry is not None and entry.source.kind == "embedded":
            path = installed_path(name)
            ok = path.is_file() and (entry.sha256 is None or sha256_file(path) == entry.sha256)
            results.append(Verification(name, ok, "embedded, sha256 matches" if ok else f"{path} is damaged"))
            continue
        record = lock["installed"].get(name)
        if entry is None and record is None:
            raise UsageError(f"no checkpoint named {name!r}; `yoda-sr checkpoints list` shows them all")
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
    if name in load_registry() and get_entry(name).source.kind == "embedded":
        raise UsageError(f"{name} is embedded in the package and cannot be removed")
    path = installed_path(name)
    existed = path.exists()
    path.unlink(missing_ok=True)
    with _updating_lock() as lock:
        existed = lock["installed"].pop(name, None) is not None or existed
    return existed


def import_checkpoint(
    file: str | Path, *, name: str, format: str = "auto", scale: int | None = None, force: bool = False
) -> tuple[Path, str | None]:
    """Convert an upstream file into the store as ``name``; returns the file and a note (or None)."""
    from .convert import convert_file

    if not _NAME.match(name):
        raise UsageError(f"checkpoint name {name!r}: use lower-case letters, digits, '.', '_' or '-'")
    entry = load_registry().get(name)
    if entry is not None and entry.source.kind == "embedded":
        raise UsageError(f"{name} is embedded in the package; import under another name")
    target = installed_path(name)
    if target.exists() and not force:
        raise UsageError(f"{name} is already installed ({target}); pass --force to replace it")
    file = Path(file)
    source_sha = sha256_file(file)
    if entry is not None:
        _check_source_hash(entry, file, source_sha, lambda: None)
        scale = scale or entry.scale
    converted = convert_file(file, format, scale=scale)
    if entry is not None:
        if entry.kind != converted.metadata["kind"]:
            raise YodaError(f"{file} holds {converted.metadata['kind']} weights, but {name} is a {entry.kind}")
        metadata = _entry_metadata(entry, converted.metadata, source_sha)
    else:
        metadata = dict(converted.metadata)
        config_name = metadata.get("matched_config")
        if metadata.get("kind") == "denoiser":
            from .models import get_config

            if metadata.get("schedule") is None:
                if not config_name:
                    raise YodaError(f"{file} has no noise schedule buffers and matches no known config")
                metadata["schedule"] = get_config(config_name).schedule.to_dict()
            steps = get_config(config_name).sampling_steps if config_name else 100
            metadata["sampling"] = {"steps": steps, "sampler": "ddpm"}
            metadata["scale"] = _scale_of(metadata)
        metadata["name"] = name
        metadata["source"] = {"imported_from": file.name, "sha256": source_sha, "format": converted.format}
    save(target, converted.tensors, metadata)
    _record_install(name, target, source_sha, None, converted.format)
    return target, converted.note


def installed_names() -> list[str]:
    """Names of everything in the local store (registry entries and imports)."""
    return sorted(read_lock()["installed"])


# --- loading --------------------------------------------------------------------------------------


@dataclass
class LoadedDenoiser:
    """A denoiser ready to sample, with what the run log needs to know about it."""

    model: Any
    metadata: dict[str, Any]
    path: Path
    name: str
    sha256: str


def resolve_model_file(name_or_path: str | os.PathLike) -> tuple[Path, str]:
    """A ``--model`` value -> (safetensors file, display name).

    Accepts a .safetensors file, a training run folder (its ``weights/ema.safetensors``, else
    ``weights/model.safetensors``), or the name of a registry entry or imported checkpoint.
    """
    text = str(name_or_path)
    candidate = Path(text).expanduser()
    if candidate.is_dir():
        for inside in ("weights/ema.safetensors", "weights/model.safetensors", "model.safetensors"):
            if (candidate / inside).is_file():
                return candidate / inside, candidate.name
        raise UsageError(f"{candidate} is a folder without weights/ema.safetensors; is it a training run folder?")
    if candidate.is_file():
        return candidate, candidate.stem
    if text.endswith(".safetensors") or os.sep in text:
        raise UsageError(f"model file {text} does not exist")
    return require(text), text


def _recorded_sha(path: Path) -> str:
    for name, record in read_lock()["installed"].items():
        if Path(record["path"]) == path and installed_path(name) == path:
            return str(record["sha256"])
    return sha256_file(path)


def load_denoiser(name_or_path: str | os.PathLike, *, device: Any = "cpu", dtype: Any = None) -> LoadedDenoiser:
    """Build and load a denoiser from a yoda-sr safetensors checkpoint (strict key and shape check)."""
    import torch
    from safetensors.torch import load_file

    from .models import create_model_from_config

    path, name = resolve_model_file(name_or_path)
    metadata = read_metadata(path)
    if metadata.get("kind") != "denoiser" or "arch" not in metadata:
        what = metadata.get("kind") or "no yoda-sr metadata"
        raise YodaError(
            f"{path} is not a yoda-sr denoiser ({what}); upstream files must be imported first: "
            "`yoda-sr checkpoints import FILE --name NAME`"
        )
    try:
        model = create_model_from_config(metadata["arch"], metadata["hparams"])
    except (KeyError, TypeError, ValueError) as error:
        raise YodaError(f"{path}: its metadata does not describe a buildable model ({error})") from None
    state = load_file(str(path))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise YodaError(f"{path}: weights do not fit {metadata['arch']} ({str(error).splitlines()[0]})") from None
    model = model.to(device=device, dtype=dtype if dtype is not None else torch.float32).eval()
    model.requires_grad_(False)
    return LoadedDenoiser(model=model, metadata=metadata, path=path, name=name, sha256=_recorded_sha(path))
