"""Turning upstream files into the store's ready files: ``import_checkpoint`` and the install step
every download ends with (convert, add metadata, record)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RequestError, YodaError, setting
from ..fsutil import temporary_path
from ..weights_file import save, sha256_file, tensor_names
from .paths import check_name
from .registry import Entry, find_entry
from .store import check_source_hash, installed_path, read_lock, record_install

if TYPE_CHECKING:
    from ..convert import Converted


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(target)
    try:
        os.link(source.resolve(), temporary)
    except OSError:
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def install_converted(entry: Entry, raw: Path, source_sha: str, revision: str | None, *, repin: bool = False) -> Path:

    from ..convert import convert_file  # torch: imported when weights are touched, not to list or verify

    """Convert (or adopt) a verified source file into the store and record it.

    Nothing is installed or pinned unless the file converts into finite weights of the entry's kind.
    ``repin`` replaces a first-download pin with this file's hash (``download --force``).
    """
    # convert (and torch with it) is imported on use, so listing or verifying checkpoints stays light.

    target = installed_path(entry.name)
    if entry.format in ("safetensors", "timm") and raw.suffix == ".safetensors":
        converted = convert_file(raw, "auto")
        _check_usable(entry, converted, raw)
        if set(converted.tensors) == set(tensor_names(raw)):
            _link_or_copy(raw, target)
        else:
            save(target, converted.tensors, _entry_metadata(entry, converted.metadata, source_sha))
    else:
        converted = convert_file(raw, entry.format, scale=entry.scale, config=entry.config, net=entry.net)
        _check_usable(entry, converted, raw)
        save(target, converted.tensors, _entry_metadata(entry, converted.metadata, source_sha))
    record_install(entry.name, target, source_sha, revision, entry.format, repin=repin)
    return target


def _check_usable(entry: Entry, converted: Converted, raw: Path) -> None:
    if converted.metadata.get("kind") != entry.kind:
        raise DamagedSourceError(
            f"{raw} holds {converted.metadata.get('kind')} weights, but {entry.name} is a {entry.kind}"
        )
    check_finite(converted.tensors, str(raw))


def check_finite(tensors: dict[str, Any], what: str) -> None:
    """YodaError if any floating-point tensor holds NaN or infinity (a damaged or spliced file)."""
    import torch

    bad = [key for key, value in tensors.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise DamagedSourceError(
            f"{what} holds non-finite values in {len(bad)} of {len(tensors)} tensors (first: {bad[0]}); "
            "the file is damaged and was not installed"
        )


class DamagedSourceError(YodaError):
    """A source file converts, but its weights are not usable (never installed, never pinned)."""


def _entry_metadata(entry: Entry, converted: dict[str, Any], source_sha: str) -> dict[str, Any]:

    from ..models import get_config  # torch: imported when weights are touched, not to list or verify

    metadata = dict(converted)
    if metadata.get("kind") == "denoiser":
        config_name = entry.config or metadata.get("matched_config")
        if config_name and metadata.get("schedule") is None:
            metadata["schedule"] = get_config(config_name).schedule.to_dict()
        if config_name:
            metadata.setdefault("sampling", {"steps": get_config(config_name).sampling_steps, "sampler": "ddpm"})
        if "matched_config" in metadata:  # converted from upstream, which upscaled its input as it is
            metadata["sampling"] = {**metadata.get("sampling", {}), "clean": "off"}
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


def _imported_metadata(file: Path, name: str, converted: Converted, source_sha: str) -> dict[str, Any]:

    from ..models import get_config  # torch: imported when weights are touched, not to list or verify

    """Metadata of a file imported under a name the registry does not know."""

    metadata = dict(converted.metadata)
    config_name = metadata.get("matched_config")
    if metadata.get("kind") == "denoiser":
        if metadata.get("schedule") is None:
            if not config_name:
                raise YodaError(f"{file} has no noise schedule buffers and matches no known config")
            metadata["schedule"] = get_config(config_name).schedule.to_dict()
        steps = get_config(config_name).sampling_steps if config_name else 100
        metadata["sampling"] = {"steps": steps, "sampler": "ddpm"}
        if "matched_config" in metadata:  # converted from upstream, which upscaled its input as it is
            metadata["sampling"]["clean"] = "off"
        metadata["scale"] = _scale_of(metadata)
    metadata["name"] = name
    metadata["source"] = {"imported_from": file.name, "sha256": source_sha, "format": converted.format}
    return metadata


def _scale_of(metadata: dict[str, Any]) -> int | None:
    hparams = metadata.get("hparams", {})
    return hparams.get("sr_scale") or hparams.get("scale")


def import_checkpoint(
    file: str | Path,
    *,
    name: str,
    format: str = "auto",
    scale: int | None = None,
    norm_groups: int | None = None,
    force: bool = False,
) -> tuple[Path, str | None]:

    from ..convert import convert_file  # torch: imported when weights are touched, not to list or verify

    """Convert an upstream file into the store as ``name``; returns the file and a note (or None).

    ``scale`` and ``norm_groups`` are for SR3 weights that match no registered configuration.
    """

    check_name(name)
    entry = find_entry(name)
    if entry is not None and entry.embedded:
        raise RequestError(f"{name} is embedded in the package; import under another name")
    read_lock()  # a damaged lock stops the import before anything is written
    target = installed_path(name)
    if target.exists() and not force:
        raise RequestError(f"{name} is already installed ({target}); pass {setting('force')} to replace it")
    file = Path(file)
    source_sha = sha256_file(file)
    config = None
    if entry is not None:
        check_source_hash(entry, file, source_sha, None)
        scale, config = scale or entry.scale, entry.config
    converted = convert_file(
        file,
        format,
        scale=scale,
        norm_groups=norm_groups,
        config=config,
        net=entry.net if entry is not None else None,
    )
    check_finite(converted.tensors, str(file))
    if entry is not None:
        if entry.kind != converted.metadata["kind"]:
            raise YodaError(f"{file} holds {converted.metadata['kind']} weights, but {name} is a {entry.kind}")
        metadata = _entry_metadata(entry, converted.metadata, source_sha)
    else:
        metadata = _imported_metadata(file, name, converted, source_sha)
    save(target, converted.tensors, metadata)
    record_install(name, target, source_sha, None, converted.format)
    return target, converted.note
