"""The registry of named checkpoints: the package's ``checkpoints.toml`` plus the user's own."""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import RequestError, YodaError
from .paths import NAME, user_registry_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

SOURCE_KINDS = ("hf", "url", "manual", "embedded")
KINDS = ("denoiser", "attention", "lpips")
_REQUIRED_SOURCE_KEYS = {
    "hf": ("repo", "filename", "revision"),
    "url": ("url",),
    "manual": ("page",),
    "embedded": ("path",),
}


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
    net: str | None = None
    """The backbone of an LPIPS entry (``vgg``, ``alex``)."""
    inner_sha256: str | None = None
    """sha256 of the weight file inside an archive source, so that file alone can be imported too."""
    fetch: str | None = None
    """A command that gets the source file on another machine (said when downloading cannot)."""
    photo_model: str | None = None
    """A denoiser entry that upscales the LR ``--clean auto`` cleaned, in this one's place
    (``Settings.photo_model``): one trained on cleaned real-world LR."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def embedded(self) -> bool:
        """Whether the file ships inside the package (always installed, never removed)."""
        return self.source.kind == "embedded"

    def to_dict(self) -> dict[str, Any]:
        source = {key: value for key, value in vars(self.source).items() if value is not None}
        data = {key: value for key, value in vars(self).items() if key not in ("source", "extra")}
        return {**data, "source": source, **self.extra}


def registry_path() -> Path:
    """The registry shipped with the package (a copy of the repository's top-level file)."""
    return Path(str(resources.files("yoda_sr") / "checkpoints.toml"))


def embedded_path(entry: Entry) -> Path:
    """The file of an embedded entry, inside the installed package."""
    if entry.source.path is None:
        raise YodaError(f"{entry.name} is not an embedded checkpoint")
    return Path(str(resources.files("yoda_sr") / entry.source.path))


def _check_types(name: str, table: dict[str, Any], where: Path) -> None:
    """ValueError for a value of the wrong type (``scale = "four"``) or a source path out of the package."""
    for item in (*Entry.__dataclass_fields__.values(), *Source.__dataclass_fields__.values()):
        values = table["source"] if item.name in Source.__dataclass_fields__ else table
        if item.name not in values or item.name in ("name", "source", "extra"):
            continue
        value, wanted = values[item.name], int if "int" in str(item.type) else str
        if isinstance(value, bool) or not isinstance(value, wanted):
            what = "an integer" if wanted is int else "a string"
            raise ValueError(f"{where}: entry {name!r}: {item.name} must be {what}, got {value!r}")
        if isinstance(value, int) and not 1 <= value <= 64:
            raise ValueError(f"{where}: entry {name!r}: {item.name} must be 1..64, got {value}")
    path = table["source"].get("path")
    if isinstance(path, str) and (path.startswith("/") or ".." in Path(path).parts):
        raise ValueError(f"{where}: entry {name!r}: an embedded path stays inside the package, got {path!r}")


def _parse_entry(name: str, table: dict[str, Any], where: Path) -> Entry:
    def need(key: str) -> Any:
        if key not in table:
            raise ValueError(f"{where}: entry {name!r} has no {key!r}")
        return table[key]

    if not NAME.fullmatch(name):
        raise ValueError(
            f"{where}: entry {name[:80]!r}: a name is 1-64 lower-case letters, digits, '.', '_' or '-', starting "
            "with a letter or digit (it becomes a file name)"
        )
    if not isinstance(table.get("source"), dict):
        raise ValueError(f"{where}: entry {name!r}: 'source' must be a table")
    _check_types(name, table, where)
    source_table = dict(need("source"))
    kind = source_table.pop("kind", None)
    if kind not in SOURCE_KINDS:
        raise ValueError(f"{where}: entry {name!r} has source kind {kind!r}; expected one of {SOURCE_KINDS}")
    for key in _REQUIRED_SOURCE_KEYS[kind]:
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
            raise YodaError(str(error) if str(error).startswith(str(user)) else f"{user}: {error}") from None
        clash = sorted(set(extra) & set(registry))
        if clash:
            raise YodaError(f"{user} redefines {', '.join(clash)}, which the package registry defines")
        registry.update(extra)
    return registry


def find_entry(name: str) -> Entry | None:
    """A registry entry by name, or None (imported checkpoints have none)."""
    return load_registry().get(name)


def get_entry(name: str) -> Entry:
    """A registry entry by name; RequestError naming close matches when there is none."""
    registry = load_registry()
    if name in registry:
        return registry[name]
    close = difflib.get_close_matches(name, list(registry), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise RequestError(f"no checkpoint named {name!r}{hint}; `yoda-sr checkpoints list` shows them all")
