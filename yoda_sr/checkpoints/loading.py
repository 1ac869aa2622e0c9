"""From a ``--model`` value to a denoiser ready to sample: a file, a run folder or a store name."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError, YodaError
from ..weights_file import read_metadata, sha256_file
from .store import installed_path, read_lock, require

if TYPE_CHECKING:
    import torch

    from ..models import SRDenoiser


@dataclass
class LoadedDenoiser:
    """A denoiser ready to sample, with what the run log needs to know about it."""

    model: SRDenoiser
    metadata: dict[str, Any]
    path: Path
    name: str
    sha256: str


def resolve_model_file(name_or_path: str | os.PathLike[str]) -> tuple[Path, str]:
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
    """The file's sha256 from the lock when the store recorded it, else hashed now."""
    for name, record in read_lock()["installed"].items():
        if Path(record["path"]) == path and installed_path(name) == path:
            return str(record["sha256"])
    return sha256_file(path)


def load_denoiser(
    name_or_path: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> LoadedDenoiser:
    """Build and load a denoiser from a yoda-sr safetensors checkpoint (strict key and shape check)."""
    import torch
    from safetensors.torch import load_file

    from ..models import create_model_from_config

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
