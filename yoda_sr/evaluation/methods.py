"""The methods an evaluation compares, by name: yoda-sr's own and peers (other SR models, ``peers``).

``--compare`` lists them comma-separated: ``bicubic``, ``base``, ``plain``, ``yoda`` and any number of
``spandrel:FILE`` (a model file spandrel recognises). A peer is named ``spandrel:<file stem>`` in
tables, per_image.csv and summary.json; its results go to a folder of that name with ``_`` for ``:``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SettingError

METHODS = ("bicubic", "base", "plain", "yoda")
"""yoda-sr's methods, in the order they are reported by default."""
MODEL_METHODS = ("base", "plain", "yoda")
"""The methods that run the model (on the LR as ``--clean`` leaves it); the others get the LR as it is."""
PEER_PREFIX = "spandrel:"
PEER_SUFFIXES = (".safetensors", ".pth")


@dataclass
class Comparison:
    """What ``--compare`` asks for: method names in order, and each peer's model file."""

    methods: list[str]
    peers: dict[str, Path] = field(default_factory=dict)


def peer_name(path: Path) -> str:
    """A peer's method name: ``spandrel:`` and its file's stem (characters outside [A-Za-z0-9._-] as _)."""
    return PEER_PREFIX + re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)


def folder(method: str) -> str:
    """The results folder of a method (no ``:`` in it, for every file system)."""
    return method.replace(":", "_")


def parse_compare(text: str) -> Comparison:
    """The methods of a comparison (comma-separated names), in order and without repeats."""
    methods: list[str] = []
    peers: dict[str, Path] = {}
    choices = f"{', '.join(METHODS)} or {PEER_PREFIX}FILE"
    for item in (part.strip() for part in text.split(",")):
        if item.lower().startswith(PEER_PREFIX):
            path = Path(item[len(PEER_PREFIX) :]).expanduser()
            if path.suffix.lower() not in PEER_SUFFIXES:
                raise SettingError("compare", f"{item}: a peer is a {' or '.join(PEER_SUFFIXES)} file")
            name = peer_name(path)
            if name in peers and peers[name].resolve() != path.resolve():
                raise SettingError("compare", f"{peers[name]} and {path} would both be named {name}; rename one")
            peers[name] = path
            item = name
        elif item.lower() in METHODS:
            item = item.lower()
        elif item:
            raise SettingError("compare", f"unknown method {item!r}; choose from {choices}")
        if item and item not in methods:
            methods.append(item)
    if not methods:
        raise SettingError("compare", f"needs at least one of {choices}")
    return Comparison(methods, peers)


__all__ = ["METHODS", "MODEL_METHODS", "Comparison", "folder", "parse_compare", "peer_name"]
