"""Reading upstream pickles safely: ``torch.load(weights_only=True)`` and nothing else.

Upstream checkpoints (`.pth`, `.ckpt`) are Python pickles. yoda-sr reads them only with PyTorch's
restricted unpickler, which rebuilds tensors and plain containers and refuses every other global
without calling it; a file that needs more is refused with a message that names what it holds.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import YodaError


class UnsafeCheckpointError(YodaError):
    """The file holds more than tensors and plain containers (classes, callables): refused."""


def _unsafe_globals(path: Path) -> list[str]:
    """The globals a checkpoint would need beyond the weights-only allowlist (never executed)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # noqa: BLE001 - older torch, or a non-zip (legacy) pickle: the unpickler's message suffices
        return []


def read_pickle(path: str | Path) -> Any:
    """Load an upstream checkpoint with ``torch.load(weights_only=True)`` onto the CPU.

    Raises UnsafeCheckpointError (one line) when the file needs any global outside PyTorch's
    weights-only allowlist, and YodaError when it is not a PyTorch checkpoint at all.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        names = _unsafe_globals(path)
        if not names:
            names = re.findall(r"GLOBAL ([\w.]+)", str(error))[:1]
        what = f" (needs {', '.join(names)})" if names else ""
        raise UnsafeCheckpointError(
            f"{path} holds more than plain tensors{what}; yoda-sr reads pickles only with "
            "torch.load(weights_only=True) and refuses this one without running it. If you trust the "
            "file, save just its state dict (torch.save(state_dict, 'plain.pth')) and import that."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise YodaError(f"{path} is not a readable PyTorch checkpoint: {first}") from None


def tensors_only(state: Mapping[str, Any], where: str) -> dict[str, Tensor]:
    """The mapping as ``{key: tensor}``; YodaError naming the first entry that is not a tensor."""
    result: dict[str, Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise YodaError(f"{where}: entry {key!r} is a {type(value).__name__}, not a tensor")
        result[str(key)] = value
    return result


def find_state_dict(obj: Any) -> dict[str, Tensor] | None:
    """The tensor dict inside a loaded checkpoint, following the layouts upstreams use.

    Plain state dicts; ``{"state_dict": {"model": ...}}`` (SRDiff's trainer); ``{"state_dict": ...}``;
    ``{"model": ...}``. Returns None when none of them holds tensors.
    """
    candidates: list[Any] = [obj]
    if isinstance(obj, Mapping):
        inner = obj.get("state_dict")
        if isinstance(inner, Mapping):
            candidates.insert(0, inner)
            if isinstance(inner.get("model"), Mapping):
                candidates.insert(0, inner["model"])
        if isinstance(obj.get("model"), Mapping):
            candidates.insert(0, obj["model"])
    for candidate in candidates:
        if isinstance(candidate, Mapping) and candidate and all(isinstance(v, Tensor) for v in candidate.values()):
            return {str(key): value for key, value in candidate.items()}
    return None
