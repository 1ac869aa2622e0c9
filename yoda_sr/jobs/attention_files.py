"""Attention maps of image files (docs/method.md §4): output names, and rendering a map as heat map,
overlay, mask timeline M(t) and .npy.

Each map is computed from the image as the LR input, at the image's size times ``scale``; the loop
over images is ``batch.Batch``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

from ..api import DEFAULT_MODEL
from ..attention.render import heatmap, overlay, timeline
from ..checkpoints import resolve_model_file
from ..diffusion.masking import expected_update_fraction, flat_areas, validate_flat_floor
from ..errors import SettingError, checked, setting
from ..fsutil import atomic_write
from ..image.grids import labelled_grid
from ..image.imaging import resize_bicubic, scaled_size, to_array, to_tensor
from ..image.io import read_picture, save_png
from ..image.restoration import clean, validate_mode
from ..models.validation import check_denoiser_metadata, default_clean
from ..runtime.devices import resolve_device
from ..runtime.memory import memory_limit
from ..weights_file import read_metadata
from .batch import Item

MAP_BYTES_PER_PIXEL = 48
"""Peak bytes per map pixel: the float map and its copies, the heat map, the overlay and the
resized image (RGB, float while resized)."""

ATTENTION_SUFFIX = ".attention"
OWN_ENDINGS = (".attention.png", ".timeline.png", ".attention.npy")
"""Names in input folders that are outputs of an earlier run, not inputs."""


@dataclass(frozen=True)
class ModelAttention:
    """The attention settings ``upscale`` would use with a model: read from its metadata alone."""

    model: str
    method: str
    lower_bound: float
    train_steps: int
    scale: int
    flat_floor: float = 0.0
    clean: str = "auto"


def model_attention(model: str | None = None) -> ModelAttention:
    """What ``upscale --model MODEL`` diffuses with (default: the default model), from its metadata."""

    path, name = resolve_model_file(model or DEFAULT_MODEL)
    metadata = read_metadata(path)
    check_denoiser_metadata(path, metadata)
    yoda = metadata.get("yoda") or {}
    return ModelAttention(
        model=name,
        method=str(yoda.get("attention", "none")),
        lower_bound=float(yoda.get("lower_bound", 0.2)),
        train_steps=int(metadata["schedule"].get("steps", 500)),
        scale=int(metadata.get("scale") or 1),
        flat_floor=float(yoda.get("flat_floor", 0.0)),
        clean=default_clean(metadata),
    )


def parse_method(method: str | None) -> str:
    """A method name (default: ``attention.DEFAULT_METHOD``), checked against ``attention.METHODS``."""
    from ..attention import DEFAULT_METHOD, METHODS

    value = DEFAULT_METHOD if method is None else method.strip().lower()
    if value not in METHODS:
        raise SettingError("method", f"unknown method {value!r}; choose from {', '.join(METHODS)}")
    return value


def parse_heads(heads: str) -> str | int:
    """How DINO heads combine: "max", "mean" or a head index."""
    from ..attention import HEAD_MODES, NUM_HEADS

    value = heads.strip().lower()
    if value in HEAD_MODES:
        return value
    if value.isdecimal() and int(value) < NUM_HEADS:
        return int(value)
    raise SettingError("heads", f"must be max, mean or a head index 0..{NUM_HEADS - 1}, got {heads!r}")


def map_outputs(image: Path, subfolder: Path, out: Path | None, method: str, timeline: bool, npy: bool) -> list[Path]:
    """Output paths of one image: the map PNG, then the timeline PNG and the .npy if asked for.

    ``out`` is None (beside the input), a .png file, or a folder (``subfolder`` mirrored under it).
    Default names carry the method (``photo.sift.attention.png``), so maps of different methods
    never stand in for each other.
    """
    if out is not None and out.suffix.lower() == ".png" and not out.is_dir():
        primary = out
    else:
        folder = image.parent if out is None else out / subfolder
        primary = folder / f"{image.stem}.{method}{ATTENTION_SUFFIX}.png"
    base = primary.name[: -len(primary.suffix)] if primary.suffix else primary.name
    base = base.removesuffix(ATTENTION_SUFFIX)
    outputs = [primary]
    if timeline:
        outputs.append(primary.with_name(f"{base}.timeline.png"))
    if npy:
        outputs.append(primary.with_name(f"{base}{ATTENTION_SUFFIX}.npy"))
    return outputs


@dataclass
class Mapped:
    """One image's map: its size (height, width) and the pixel-update fraction mean(min(1, A + l))."""

    size: tuple[int, int]
    fraction: float


class AttentionMaps:
    """Per-item batch work (``batch.each``): computes an image's map and writes what the item's
    ``pending`` outputs ask for (the main one as heat map or overlay, the timeline, the .npy)."""

    def __init__(
        self,
        method: str | None = None,
        *,
        heads: str = "max",
        weights: Path | None = None,
        scale: float = 1.0,
        overlay: bool = False,
        colorbar: bool = False,
        timeline: int | None = None,
        lower_bound: float = 0.2,
        steps: int = 500,
        device: str = "auto",
        flat_floor: float = 0.0,
        clean: str = "auto",
    ) -> None:

        self.method = parse_method(method)
        self.heads = parse_heads(heads)
        if not 0.0 <= lower_bound <= 1.0:
            raise SettingError("lower_bound", f"must lie in [0, 1], got {lower_bound:g}")
        if steps < 1:
            raise SettingError("steps", f"must be a positive integer, got {steps}")
        self.flat_floor = checked("flat_floor", validate_flat_floor, flat_floor)
        self.clean = checked("clean", validate_mode, clean)
        if timeline is not None and timeline < 1:
            raise SettingError("timeline", f"needs at least 1 frame, got {timeline}")
        if not (math.isfinite(scale) and scale > 0):
            raise SettingError("scale", f"must be a positive number, got {scale:g}")
        self.weights, self.scale, self.overlay, self.colorbar = weights, scale, overlay, colorbar
        self.timeline, self.lower_bound, self.steps = timeline, lower_bound, steps
        self.device = resolve_device(device)

    @property
    def uses_weights(self) -> bool:
        from ..attention import WEIGHTED_METHODS

        return self.method in WEIGHTED_METHODS

    def _check_memory(self, lr_size: tuple[int, int], map_size: tuple[int, int]) -> None:
        """Refuse a map larger than the memory before computing it, naming the scale that fits."""
        needed = map_size[0] * map_size[1] * MAP_BYTES_PER_PIXEL
        limit = memory_limit()
        if needed > limit:
            fits = math.sqrt(limit / MAP_BYTES_PER_PIXEL / (lr_size[0] * lr_size[1]))
            raise SettingError(
                "scale",
                f"a {map_size[1]}x{map_size[0]} map needs about {needed / 2**30:.1f} GiB, more than the "
                f"{limit / 2**30:.1f} GiB there are; use {setting('scale', f'{math.floor(fits * 10) / 10:g}')} or less",
            )

    def __call__(self, item: Item) -> Mapped:
        import torch

        from ..attention import compute_attention

        lr = to_tensor(clean(read_picture(item.image).rgb, self.clean)[0])
        rgb = to_array(lr)
        map_size = scaled_size(rgb.shape[:2], self.scale)
        self._check_memory(rgb.shape[:2], map_size)
        maps = compute_attention(
            lr.to(self.device),
            self.method,
            hr_size=map_size,
            heads=self.heads,
            weights=self.weights,
            device=self.device,
        )
        attention_map = maps[0, 0].float().cpu()
        values = attention_map.numpy()
        flat = None  # the LR pixels that keep the base in upscale, at the map's size
        if self.flat_floor and self.method != "none":
            lr_flat = flat_areas(lr, self.flat_floor).float()
            flat = torch.nn.functional.interpolate(lr_flat, size=map_size, mode="nearest")[0, 0] > 0.5
        primary = item.outputs[0]
        renders: dict[Path, Any] = {}
        for output in item.pending:
            if output == primary and self.overlay:
                if map_size != rgb.shape[:2]:
                    rgb = to_array(resize_bicubic(lr, size=map_size))
                renders[output] = overlay(rgb, values)
            elif output == primary:
                renders[output] = heatmap(values)
            elif output.suffix == ".npy":
                renders[output] = values.astype("float32")
            else:
                flat_map = None if flat is None else flat.numpy()
                renders[output] = timeline(values, self.lower_bound, self.steps, self.timeline or 1, flat_map)
        if self.colorbar and primary in renders:
            title = f"{self.method} attention{' over the image' if self.overlay else ''}"
            renders[primary] = labelled_grid([[renders[primary]]], [title], colorbar="A")
        for output, content in renders.items():
            output.parent.mkdir(parents=True, exist_ok=True)
            if output.suffix == ".npy":
                atomic_write(output, partial(_save_npy, array=content))
            else:
                save_png(content, output)
        return Mapped(map_size, expected_update_fraction(attention_map, self.lower_bound, flat))


def _save_npy(handle: IO[bytes], array: Any) -> None:
    """Write ``array`` to an open binary file in NumPy's .npy format."""
    import numpy as np

    np.save(handle, array, allow_pickle=False)
