"""From a ``--model`` value to a denoiser ready to sample (a file, a run folder or a store name), and
LPIPS networks from their named checkpoints."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RequestError, YodaError
from ..weights_file import read_metadata, tensor_shapes
from .registry import find_entry
from .store import installed_path, read_lock, require

if TYPE_CHECKING:
    import torch

    from ..models import SRDenoiser
    from ..models.lpips import LpipsNetwork


@dataclass
class LoadedDenoiser:
    """A denoiser ready to sample, with what the run log needs to know about it."""

    model: SRDenoiser
    metadata: dict[str, Any]
    path: Path
    name: str
    sha256: str
    photo_model: str | None = None
    """The registry entry's ``photo_model`` when the file is that entry's (``installed_path``)."""


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
        raise RequestError(f"{candidate} is a folder without weights/ema.safetensors; is it a training run folder?")
    if candidate.is_file():
        return candidate, candidate.stem
    if text.endswith(".safetensors") or os.sep in text:
        raise RequestError(f"model file {text} does not exist")
    return require(text), text


def _read_and_hash(path: Path) -> tuple[bytes, str]:
    """The file's bytes and their sha256, read once (what is hashed is what is loaded). A store file
    whose hash differs from the one recorded at install is refused."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise YodaError(f"{path}: cannot read it ({error.strerror or error})") from None
    actual = hashlib.sha256(data).hexdigest()
    for name, record in read_lock()["installed"].items():
        if installed_path(name) == path and record.get("sha256") not in (None, actual):
            raise YodaError(
                f"{path} has changed since it was installed (sha256 {actual[:12]}..., recorded "
                f"{str(record['sha256'])[:12]}...); run `yoda-sr checkpoints verify` and download or import it again"
            )
    return data, actual


def load_denoiser(
    name_or_path: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> LoadedDenoiser:

    from ..models import create_model_from_config  # torch: imported when weights are touched, not to list or verify
    from ..models.validation import check_denoiser_metadata, check_shapes

    """Build and load a denoiser from a yoda-sr safetensors checkpoint (strict key and shape check)."""
    import torch
    from safetensors.torch import load as load_weights

    path, name = resolve_model_file(name_or_path)
    metadata = read_metadata(path)
    if metadata.get("kind") != "denoiser" or "arch" not in metadata:
        what = metadata.get("kind") or "no yoda-sr metadata"
        raise YodaError(
            f"{path} is not a yoda-sr denoiser ({what}); upstream files must be imported first: "
            "`yoda-sr checkpoints import FILE --name NAME`"
        )
    check_denoiser_metadata(path, metadata)
    check_shapes(path, metadata, tensor_shapes(path))
    model = create_model_from_config(metadata["arch"], metadata["hparams"])
    data, sha256 = _read_and_hash(path)
    try:
        state = load_weights(data)
    except Exception as error:  # safetensors raises its own error types
        raise YodaError(f"{path}: not a readable safetensors file ({str(error).splitlines()[0]})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise YodaError(f"{path}: weights do not fit {metadata['arch']} ({str(error).splitlines()[0]})") from None
    model = model.to(device=device, dtype=dtype if dtype is not None else torch.float32).eval()
    model.requires_grad_(False)
    entry = find_entry(name)  # the registry's file under its name, not a file that shares the name
    photo_model = entry.photo_model if entry is not None and path == installed_path(name) else None
    return LoadedDenoiser(model=model, metadata=metadata, path=path, name=name, sha256=sha256, photo_model=photo_model)


def load_lpips(name_or_path: str | os.PathLike[str], *, device: torch.device | str = "cpu") -> LpipsNetwork:

    from ..models.lpips import NETS, LpipsNetwork  # torch: imported when weights are touched, not to list or verify

    """An LPIPS network (eval mode, no gradients) from a named checkpoint (``lpips-vgg``,
    ``lpips-alex``) or a yoda-sr .safetensors file; NotInstalledError naming the command that gets it."""
    from safetensors.torch import load as load_weights

    path, _ = resolve_model_file(name_or_path)
    metadata = read_metadata(path)
    if metadata.get("kind") != "lpips" or metadata.get("net") not in NETS:
        what = metadata.get("kind") or "no yoda-sr metadata"
        raise YodaError(
            f"{path} is not a yoda-sr LPIPS checkpoint ({what}); get one with `yoda-sr checkpoints download lpips-vgg`"
        )
    data, _ = _read_and_hash(path)
    network = LpipsNetwork(metadata["net"])
    try:
        network.load_state_dict(load_weights(data), strict=True)
    except Exception as error:  # safetensors' own errors, or RuntimeError from a strict load
        raise YodaError(f"{path}: weights do not fit LPIPS-{metadata['net']} ({str(error).splitlines()[0]})") from None
    return network.to(device).eval().requires_grad_(False)
