"""Where the checkpoint store keeps things: ``$YODA_SR_HOME`` and the files inside it."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import RequestError

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
"""A checkpoint name: it becomes a file name in the store, so it can never name a path."""


def home() -> Path:
    """``$YODA_SR_HOME``, default ``~/.cache/yoda-sr``."""
    return Path(os.environ.get("YODA_SR_HOME") or Path.home() / ".cache" / "yoda-sr").expanduser()


def user_registry_path() -> Path:
    """Extra entries of this machine's own: ``$YODA_SR_HOME/checkpoints.toml`` (same format)."""
    return home() / "checkpoints.toml"


def lock_path() -> Path:
    """The store's record of what is installed and which source hashes are pinned."""
    return home() / "checkpoints.lock.json"


def check_name(name: str) -> str:
    """``name`` if it is a valid checkpoint name, else RequestError (before any file is touched)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise RequestError(
            f"checkpoint name {name!r}: use 1-64 lower-case letters, digits, '.', '_' or '-', starting with "
            "a letter or digit"
        )
    return name


def store_folder() -> Path:
    """The folder of the store's ready files."""
    return home() / "checkpoints"


def store_path(name: str) -> Path:
    """The ready-to-load file of a downloaded or imported checkpoint (the name is checked first)."""
    return store_folder() / f"{check_name(name)}.safetensors"


def download_path(name: str, filename: str) -> Path:
    """Where a URL source's file is downloaded (and its ``.part`` kept) before conversion."""
    plain = Path(filename).name
    if plain in ("", ".", "..") or plain != filename:
        plain = "download"
    return home() / "downloads" / check_name(name) / plain
