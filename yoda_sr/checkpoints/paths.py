"""Where the checkpoint store keeps things: ``$YODA_SR_HOME`` and the files inside it."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """``$YODA_SR_HOME``, default ``~/.cache/yoda-sr``."""
    return Path(os.environ.get("YODA_SR_HOME") or Path.home() / ".cache" / "yoda-sr").expanduser()


def user_registry_path() -> Path:
    """Extra entries of this machine's own: ``$YODA_SR_HOME/checkpoints.toml`` (same format)."""
    return home() / "checkpoints.toml"


def lock_path() -> Path:
    """The store's record of what is installed and which source hashes are pinned."""
    return home() / "checkpoints.lock.json"


def store_path(name: str) -> Path:
    """The ready-to-load file of a downloaded or imported checkpoint."""
    return home() / "checkpoints" / f"{name}.safetensors"


def download_path(name: str, filename: str) -> Path:
    """Where a URL source's file is downloaded (and its ``.part`` kept) before conversion."""
    return home() / "downloads" / name / filename
