"""yoda-sr's weights file: safetensors with yoda-sr's JSON metadata (docs/method.md §8).

A checkpoint is a plain safetensors file whose ``__metadata__`` holds one key, ``METADATA_KEY``,
whose value is a JSON object: what the tensors are (``kind``, ``arch``, ``hparams``, ...) plus
``format_version`` and the ``yoda_sr_version`` that wrote it. This module is a leaf: the checkpoint
store, the converters and training all write and read weights through it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import YodaError
from .fsutil import atomic_save

if TYPE_CHECKING:
    from torch import Tensor

METADATA_KEY = "yoda_sr"
"""The safetensors ``__metadata__`` key whose value is yoda-sr's JSON metadata."""
FORMAT_VERSION = 1
_DAMAGED = "the file cannot be used: download, import or train it again"
_CHUNK = 1 << 20


def save(path: str | Path, tensors: Mapping[str, Tensor], metadata: dict[str, Any]) -> Path:
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
        with safe_open(str(path), framework="numpy") as handle:  # the header alone: no torch imported
            raw = (handle.metadata() or {}).get(METADATA_KEY)
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
        raise YodaError(f"{path} is not a readable safetensors file: {error}") from None
    if not raw:
        return {}
    try:
        metadata = json.loads(raw)
    except ValueError as error:
        raise YodaError(f"{path}: its yoda-sr metadata is not valid JSON ({error}); {_DAMAGED}") from None
    if not isinstance(metadata, dict):
        what = type(metadata).__name__
        raise YodaError(f"{path}: its yoda-sr metadata is a JSON {what}, not an object; {_DAMAGED}")
    return metadata


def tensor_names(path: str | Path) -> list[str]:
    """The tensor names a safetensors file holds, read from its header alone."""
    return list(tensor_shapes(path))


def tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape, read from the safetensors header alone (no tensor data is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
        raise YodaError(f"{path} is not a readable safetensors file: {error}") from None


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
