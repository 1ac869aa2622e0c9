"""Checks on a checkpoint's metadata before anything is built from it: the file is hostile until the
metadata describes a model we know, in sane ranges, whose parameters are exactly the file's tensors.

The last check builds the model on PyTorch's ``meta`` device (no memory) and compares its state
dict with the shapes in the safetensors header, so absurd hyperparameters (a memory bomb) are
refused before a single weight is allocated.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

from ..diffusion.processes import PROCESSES, SAMPLERS, schedule_spec
from ..errors import YodaError
from ..image.conditioning import DEFAULT_X_UP, X_UP_RECIPES
from . import create_model_from_config
from ._registry import ARCHS

MAX_HPARAM = 1 << 16
"""No hyperparameter of a registered architecture is an integer above this."""
MAX_TRAIN_STEPS = 100_000
MAX_SCALE = 16


class MetadataError(YodaError):
    """A checkpoint's metadata is malformed or out of range."""


def check_denoiser_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """MetadataError naming the file and the first problem; returns quietly for usable metadata."""

    def fail(problem: str) -> MetadataError:
        return MetadataError(f"{path}: its yoda-sr metadata {problem}; the file cannot be used as a model")

    arch = metadata.get("arch")
    if not isinstance(arch, str) or arch not in ARCHS:
        raise fail(f"names an unknown architecture {arch!r} (known: {', '.join(sorted(ARCHS))})")
    hparams = metadata.get("hparams")
    if not isinstance(hparams, dict):
        raise fail("has no 'hparams' object")
    parameters = inspect.signature(ARCHS[arch].__init__).parameters
    for key, value in hparams.items():
        if not _sane(value):
            raise fail(f"has an unusable hyperparameter {key!r} = {value!r}")
        annotation = parameters[key].annotation if key in parameters else None
        if isinstance(annotation, str) and not _fits(annotation, value):
            raise fail(f"has hyperparameter {key!r} = {value!r}, which is not {annotation}")
    scale = metadata.get("scale")
    if scale is not None and not (_is_int(scale) and 1 <= scale <= MAX_SCALE):
        raise fail(f"has scale {scale!r}; expected an integer 1..{MAX_SCALE}")
    process = metadata.get("process", "ddpm")
    if process not in PROCESSES:
        raise fail(f"names an unknown diffusion process {process!r} (known: {', '.join(PROCESSES)})")
    schedule = metadata.get("schedule")
    if not isinstance(schedule, dict):
        raise fail("has no 'schedule' object")
    try:
        spec = schedule_spec(metadata)
    except (TypeError, ValueError) as error:
        raise fail(f"has an unusable schedule ({error})") from None
    sampling = metadata.get("sampling", {})
    if not isinstance(sampling, dict):
        raise fail("has a 'sampling' entry that is not an object")
    steps = sampling.get("steps", 1)
    if not (_is_int(steps) and 1 <= steps <= spec.steps):
        raise fail(f"has sampling steps {steps!r}; expected an integer 1..{spec.steps}")
    samplers = SAMPLERS[process]
    if sampling.get("sampler", samplers[0]) not in samplers:
        raise fail(f"has sampler {sampling.get('sampler')!r}; expected {' or '.join(samplers)} for {process}")
    eta = sampling.get("eta", 0.0)
    if not (_is_number(eta) and eta >= 0):
        raise fail(f"has eta {eta!r}; expected a finite number >= 0")
    if sampling.get("clean", "auto") not in ("auto", "off"):
        raise fail(f"has clean {sampling.get('clean')!r}; expected auto or off")
    yoda = metadata.get("yoda", {})
    if not isinstance(yoda, dict):
        raise fail("has a 'yoda' entry that is not an object")
    lower_bound = yoda.get("lower_bound", 0.2)
    if not (_is_number(lower_bound) and 0 <= lower_bound <= 1):
        raise fail(f"has lower bound {lower_bound!r}; expected a number in [0, 1]")
    flat_floor = yoda.get("flat_floor", 0.0)
    if not (_is_number(flat_floor) and 0 <= flat_floor <= 255):
        raise fail(f"has flat-area floor {flat_floor!r}; expected a number of 8-bit levels in [0, 255]")
    if not isinstance(yoda.get("attention", "none"), str) or not isinstance(yoda.get("mask_input", True), bool):
        raise fail("has a 'yoda' entry with an attention that is not a name or a mask_input that is not true/false")
    x_up = metadata.get("x_up", DEFAULT_X_UP)
    if not isinstance(x_up, str) or x_up not in X_UP_RECIPES:
        raise fail(f"names an unknown condition recipe x_up = {x_up!r} (known: {', '.join(X_UP_RECIPES)})")


def default_clean(metadata: dict[str, Any]) -> str:
    """The model's ``--clean`` default: its metadata's ``sampling.clean``; else ``off`` for weights
    imported from upstream (they record the configuration they matched: upstream upscaled its input
    as it is, and the model is exact to upstream only on that input), ``auto`` for the project's own."""
    sampling = metadata.get("sampling") or {}
    if isinstance(sampling, dict) and sampling.get("clean") in ("auto", "off"):
        return str(sampling["clean"])
    return "off" if "matched_config" in metadata else "auto"


def check_shapes(path: Path, metadata: dict[str, Any], file_shapes: dict[str, tuple[int, ...]]) -> None:
    """MetadataError unless the architecture the metadata describes has exactly the file's tensors.

    The model is built on the ``meta`` device, so nothing is allocated whatever the metadata says.
    """
    import torch

    try:
        with torch.device("meta"):
            model = create_model_from_config(metadata["arch"], metadata["hparams"])
    except (KeyError, TypeError, ValueError, RuntimeError, AssertionError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise MetadataError(
            f"{path}: its metadata does not describe a buildable model ({message}); the file cannot be used as a model"
        ) from None
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    missing = sorted(set(expected) - set(file_shapes))
    unexpected = sorted(set(file_shapes) - set(expected))
    wrong = sorted(key for key in set(expected) & set(file_shapes) if expected[key] != file_shapes[key])
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise MetadataError(
            f"{path}: its weights do not fit the {metadata['arch']} its metadata describes "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} of another shape; first: {first}); "
            "the file cannot be used as a model"
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) and math.isfinite(value)


def _fits(annotation: str, value: object) -> bool:
    """Whether ``value`` has a type the constructor annotation names (``int``, ``int | None``,
    ``Sequence[int]``, ...): a string "4" for an int is refused here, not deep inside a model.
    Annotations this does not know pass (the meta-device build checks the rest)."""
    for option in (part.strip() for part in annotation.split("|")):
        if option == "None" and value is None:
            return True
        if option == "int" and _is_int(value):
            return True
        if option == "float" and _is_number(value):
            return True
        if option == "bool" and isinstance(value, bool):
            return True
        if option.startswith(("Sequence[int]", "list[int]", "tuple[int")):
            if isinstance(value, list | tuple) and all(_is_int(item) for item in value):
                return True
        elif option not in ("None", "int", "float", "bool") and (option != "str" or isinstance(value, str)):
            return True
    return False


def _sane(value: object) -> bool:
    """A hyperparameter value as our architectures take them: small integers, finite numbers,
    short strings, booleans, None, or short lists of those."""
    if value is None or isinstance(value, bool):
        return True
    if _is_int(value):
        return 0 <= value <= MAX_HPARAM  # type: ignore[operator]
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return len(value) <= 64
    if isinstance(value, list | tuple):
        return len(value) <= 64 and all(_sane(item) and not isinstance(item, list | tuple) for item in value)
    return False
