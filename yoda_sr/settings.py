"""What one upscale is asked for, what it runs with and what it returns: ``Settings`` (the request,
``None`` for the model's default), ``Resolved`` (filled in and checked) and ``Result`` (``api.Upscaler``)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from .errors import SettingError
from .image.restoration import Cleaning

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

DEFAULT_MODEL = "yoda-srdiff-x4"
"""The model upscale, attention and evaluate use when none is named (embedded in the package)."""


@dataclass
class Settings:
    """Sampling settings of one run; ``None`` fields take the model's defaults."""

    steps: int | None = None
    sampler: str | None = None
    eta: float | None = None
    attention: str | None = None
    lower_bound: float | None = None
    flat_floor: float | None = None
    """LR areas with less detail than this (8-bit levels, ``masking.flat_areas``) keep the base; 0: off."""
    clean: str | None = None
    """auto: deblock JPEG-decoded and denoise noisy LR before upscaling (``restoration.clean``); off.
    None: the model's (``models.validation.default_clean``: auto, off for imported upstream weights)."""
    photo_model: str | None = None
    """The model that upscales an LR the cleaning deblocked (JPEG found): a checkpoint name or file,
    or off (this model upscales everything). None: the model's (its registry entry's
    ``photo_model``; off for other models)."""
    tile: int | str = "auto"
    tile_overlap: int = 32
    tile_batch: int = 1
    """Tiles of one image per denoiser call (they share a shape; other images never join them)."""
    stream: str = "auto"
    """auto: stream tiles (docs/method.md §7) when whole-image tensors would exceed ``memory_budget``; on, off."""
    memory_budget: int | None = None
    """Bytes for whole-image tensors; None: half the machine's (or the GPU's) memory size."""
    sparse: bool = True
    """Run the denoiser only on the active blocks of M(t) (docs/method.md §11); False: dense masked sampling."""
    block: int | str = "auto"
    """HR side of the blocks the map is averaged over; auto: 64 with ``sparse``, 0 (pixel-level) without."""


@dataclass(frozen=True)
class Resolved:
    """``Settings`` with the model's defaults filled in and every value checked (``Upscaler.resolve``):
    what a run actually uses. Frozen; ``dataclasses.replace`` makes a changed copy."""

    steps: int
    sampler: str
    eta: float
    attention: str
    """An attention method, or ``none`` (plain diffusion)."""
    lower_bound: float
    flat_floor: float
    clean: str
    photo_model: str
    """A checkpoint name or file, or off."""
    tile: int | str
    """``auto`` or a side in pixels (0: off)."""
    tile_overlap: int
    tile_batch: int
    stream: str
    """auto, on or off."""
    memory_budget: int | None
    sparse: bool
    block: int
    """HR side of the blocks the map is averaged over (0: pixel-level)."""

    def request(self) -> Settings:
        """The same values as a request (to resolve again, e.g. for another model)."""
        return Settings(**{field.name: getattr(self, field.name) for field in fields(self)})


@dataclass
class Result:
    """One super-resolved image and what it cost."""

    image: np.ndarray
    attention: np.ndarray | None
    update_fraction: float
    seconds: float
    steps: int
    sampler: str
    attention_method: str
    lower_bound: float
    tile: int | None
    dtype: str
    streamed: bool = False
    """Tiles were sampled one by one (then ``attention`` is at LR size)."""
    work_fraction: float = 1.0
    """Pixels the denoiser evaluated (halos and tile overlaps included) / (steps x image pixels)."""
    sparse: bool = False
    block: int = 0
    flat_floor: float = 0.0
    cleaning: Cleaning = Cleaning()
    """What was removed from the LR before upscaling (``Settings.clean``)."""
    model: str = ""
    """The name of the model that upscaled it (the photo model for a cleaned LR, ``Settings.photo_model``)."""
    model_sha256: str = ""

    def to_pil(self) -> PILImage:
        """``image`` as a PIL image (8-bit; 16-bit results are reduced to 8 bits)."""
        from PIL import Image

        array = self.image if self.image.dtype == np.uint8 else (self.image >> 8).astype(np.uint8)
        return Image.fromarray(array)


# --- settings given as text (a flag's value, a form field) -------------------------------------------

FORMATS = ("auto", "png", "jpg", "webp", "tiff")
"""Output format choices: auto keeps the input's format where it can hold the result."""


def output_format(fmt: str) -> str:
    """A format choice (auto, png, jpg or jpeg, webp, tiff), normalized."""
    value = fmt.strip().lower()
    value = "jpg" if value == "jpeg" else value
    if value not in FORMATS:
        raise SettingError("format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return value


def parse_tile(tile: str) -> int | str:
    """A tile choice: "auto", or a side in pixels (0: no tiling)."""
    value = tile.strip().lower()
    if value == "auto":
        return value
    if not value.isdecimal():
        raise SettingError("tile", f"must be auto, 0 (off) or a size in pixels, got {tile!r}")
    return int(value)


def parse_photo_model(value: object) -> str:
    """A photo model choice: off (also none or empty), or a checkpoint name or file."""
    if not isinstance(value, str):
        raise SettingError("photo_model", f"must be a checkpoint name or file, or off, got {value!r}")
    text = value.strip()
    return "off" if text.lower() in ("", "off", "none") else text


def parse_sparse(sparse: str) -> bool:
    """A sparse-evaluation switch: on or off."""
    value = sparse.strip().lower()
    if value not in ("on", "off"):
        raise SettingError("sparse", f"must be on or off, got {sparse!r}")
    return value == "on"


def parse_block(block: str) -> int | str:
    """A block choice: "auto", or an HR side in pixels (0: pixel-level maps)."""
    value = block.strip().lower()
    if value == "auto":
        return value
    if not value.isdecimal():
        raise SettingError("block", f"must be auto, 0 (pixel-level maps) or a side in pixels, got {block!r}")
    return int(value)


__all__ = ["FORMATS", "Resolved", "Result", "Settings", "output_format", "parse_block", "parse_sparse", "parse_tile"]
