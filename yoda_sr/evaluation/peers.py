"""Peers: other single-image SR models as evaluation methods (``evaluate --compare spandrel:FILE``).

spandrel (the ``peers`` extra) recognises the architecture and its hyperparameters from a state
dict's keys and shapes (ESRGAN/Real-ESRGAN, SwinIR, HAT, Compact and many more). The file is read
here, never by spandrel: safetensors directly, ``.pth`` only through ``torch.load(weights_only=True)``
(``convert.pickles``), so a hostile pickle runs nothing. A peer gets the evaluation's LR as it is (it
does its own restoration, as bicubic gets it), as [0, 1] float RGB on the evaluation's device and
dtype (fp32 where its architecture supports no half precision), in tiles when the whole image would
need more than the memory budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..convert.pickles import read_pickle, tensors_only
from ..errors import RequestError, SettingError, YodaError, setting
from ..image.imaging import to_array, to_tensor
from ..runtime.memory import memory_budget
from ..weights_file import sha256_file

CONTEXT = 16
"""LR pixels a tile sees beyond the part of it that is kept, on each side (so seams do not show)."""
FEATURES = 256
"""Values per output pixel an SR network's peak holds (about four 64-channel maps at the output size):
with the element size and the scale squared, the bytes per LR pixel that decide tiling."""
SMALLEST_TILE = 32


def load_spandrel() -> Any:
    """The spandrel module; RequestError (one line, the install command) when it is not installed."""
    try:
        import spandrel
    except ImportError:
        raise RequestError("comparing with spandrel:FILE needs spandrel: pip install 'yoda-sr[peers]'") from None
    return spandrel


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a peer's file: safetensors directly, ``.pth`` only with weights_only, unwrapped
    from the layouts trainers save (``params_ema``, ``state_dict``, ``module.`` prefixes)."""
    spandrel = load_spandrel()
    if not path.is_file():
        raise YodaError(f"{path}: no such file")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path))
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
            raise YodaError(f"{path} is not a readable safetensors file: {error}") from None
    else:
        state = read_pickle(path)
    if not isinstance(state, dict):
        raise YodaError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return tensors_only(spandrel.canonicalize_state_dict(state), str(path))


@dataclass
class Peer:
    """A loaded peer: its method name, file, spandrel descriptor and where it runs."""

    name: str
    path: Path
    sha256: str
    descriptor: Any
    """spandrel's ``ImageModelDescriptor`` (the network, scale, size rules, tiling advice)."""
    device: torch.device
    dtype: torch.dtype
    budget: int
    """Bytes the whole-image activations may take before the image is run in tiles."""

    @classmethod
    def load(cls, name: str, path: Path, *, scale: int, device: torch.device, dtype: torch.dtype) -> Peer:
        """Load ``path`` with spandrel for an evaluation at ``scale``; RequestError (one line) when
        spandrel does not recognise it, it is no RGB SR model, or it upscales by another factor."""
        spandrel = load_spandrel()
        state = read_state(path)
        try:
            descriptor = spandrel.ModelLoader().load_from_state_dict(state)
        except spandrel.UnsupportedModelError:
            sample = ", ".join(list(state)[:3])
            raise RequestError(
                f"{name}: spandrel {spandrel.__version__} does not recognise the model in {path} (keys like {sample})"
            ) from None
        except Exception as error:  # noqa: BLE001 - an architecture may fail anyhow on weights it half-recognises
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise RequestError(f"{name}: spandrel cannot load {path}: {first}") from None
        architecture = descriptor.architecture.name
        if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.purpose != "SR":
            raise RequestError(f"{name}: {path} is a {architecture} {descriptor.purpose} model, not image SR")
        if (descriptor.input_channels, descriptor.output_channels) != (3, 3):
            channels = f"{descriptor.input_channels} -> {descriptor.output_channels}"
            raise RequestError(f"{name}: {architecture} in {path} maps {channels} channels; evaluate compares RGB")
        if descriptor.scale != scale:
            raise SettingError(
                "compare",
                f"{name} ({architecture}) upscales by {descriptor.scale}, this evaluation by {scale}: evaluate "
                f"at {setting('scale', descriptor.scale)}, or compare a x{scale} model",
            )
        halves = {torch.float16: descriptor.supports_half, torch.bfloat16: descriptor.supports_bfloat16}
        dtype = dtype if halves.get(dtype, True) else torch.float32
        descriptor.to(device).to(dtype).eval()
        return cls(name, path, sha256_file(path), descriptor, device, dtype, memory_budget(device))

    @property
    def architecture(self) -> str:
        return str(self.descriptor.architecture.name)

    def describe(self) -> dict[str, Any]:
        """What summary.json records of the peer (its ``sha256`` is part of the evaluation's identity)."""
        parameters = sum(parameter.numel() for parameter in self.descriptor.model.parameters())
        return {
            "file": str(self.path.resolve()),
            "sha256": self.sha256,
            "architecture": self.architecture,
            "scale": self.descriptor.scale,
            "parameters": parameters,
            "dtype": str(self.dtype).removeprefix("torch."),
        }

    def tile_side(self, height: int, width: int) -> int | None:
        """The LR side of the tiles an image of this size runs in; None: whole (it fits the budget,
        or the architecture tiles internally)."""
        per_pixel = FEATURES * self.descriptor.scale**2 * torch.finfo(self.dtype).bits // 8
        internal = self.descriptor.tiling.name == "INTERNAL"
        if internal or height * width * per_pixel <= self.budget:
            return None
        return max(SMALLEST_TILE, math.isqrt(self.budget // per_pixel) - 2 * CONTEXT)

    def upscale(self, lr: np.ndarray) -> np.ndarray:
        """The peer's uint8 result for a uint8 H x W x 3 LR image (``scale`` times its size)."""
        image = ((to_tensor(lr) + 1) / 2).to(self.device, self.dtype)
        height, width = image.shape[-2:]
        side = self.tile_side(height, width)
        scale = self.descriptor.scale
        with torch.inference_mode():
            if side is None:
                result = self.descriptor(image).float()
            else:
                result = torch.empty(1, 3, height * scale, width * scale, device=self.device)
                for top in range(0, height, side):
                    for left in range(0, width, side):
                        bottom, right = min(top + side, height), min(left + side, width)
                        y0, x0 = max(0, top - CONTEXT), max(0, left - CONTEXT)
                        y1, x1 = min(height, bottom + CONTEXT), min(width, right + CONTEXT)
                        tile = self.descriptor(image[..., y0:y1, x0:x1]).float()
                        kept = tile[..., (top - y0) * scale :, (left - x0) * scale :]
                        rows, columns = (bottom - top) * scale, (right - left) * scale
                        result[..., top * scale : bottom * scale, left * scale : right * scale] = kept[
                            ..., :rows, :columns
                        ]
        return to_array(result * 2 - 1)


__all__ = ["Peer", "load_spandrel", "read_state"]
