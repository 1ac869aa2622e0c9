"""Reading photos for the model and writing results back faithfully: bit depth, alpha, greyscale, ICC, EXIF.

``read_picture`` decodes by content (not extension), applies the EXIF orientation and keeps what the
output needs. 16-bit sources stay 16-bit: Pillow keeps only the high bytes of 16-bit colour (and
grey + alpha) PNGs and TIFFs, so those are decoded again with other raw modes to recover the low
bytes, and 16-bit PNGs are written by a small encoder here, as Pillow cannot write 16-bit colour.
``write_picture`` writes atomically (a hidden temporary file in the same folder, then a rename), so
an interrupted run never leaves a partial or empty output. Problems with a file raise a one-line
``YodaError``.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError, features

from ..errors import SettingError, YodaError, setting
from ..fsutil import atomic_write
from .png16 import EXIF_PREFIX, encode_png, tile_rawmodes, wide_samples

DEFAULT_MAX_PIXELS = 8192 * 8192
"""Largest input read without --max-pixels (67 MP): more than 8K frames and full-frame cameras, below
Pillow's 89 MP bomb warning; a x4 result of it is already a gigapixel."""
MIN_SIDE = 4
"""Smallest width or height read: the upscaler has nothing to work with below a few pixels."""
_ORIENTATION = 0x0112
_PILLOW_PNG_PIXELS = 64 * 2**20
"""8-bit PNGs above this many pixels are written by ``png16.encode_png`` 64 rows at a time: Pillow
would first copy them at 4 bytes a pixel (256 MiB here)."""

_FORMATS = {"png": ("PNG", ".png"), "jpg": ("JPEG", ".jpg"), "webp": ("WEBP", ".webp"), "tiff": ("TIFF", ".tif")}
_NAMES = {"jpeg": "jpg", "jpe": "jpg", "mpo": "jpg", "tif": "tiff"}
_PILLOW_LIMIT = threading.Lock()
_ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


@dataclass
class Picture:
    """A decoded image ready for the model, plus what is needed to write the result back faithfully."""

    rgb: np.ndarray
    """H x W x 3, uint8 or uint16 (16-bit sources keep 16 bits), EXIF orientation applied."""
    alpha: np.ndarray | None
    """H x W, same dtype as ``rgb``, or None."""
    grey: bool
    """The source was greyscale (its three channels are equal): write the result as greyscale."""
    bits: int
    """8 or 16."""
    icc_profile: bytes | None
    """The source's RGB or GRAY ICC profile; None for other colour spaces (CMYK is converted naively)."""
    exif: bytes | None
    """EXIF ("Exif\\0\\0" + TIFF structure) with Orientation reset to 1; None for TIFF sources, whose tags
    describe the file's own layout."""
    source_format: str
    """Pillow format name: "PNG", "JPEG" (also for multi-picture JPEGs), "WEBP", "TIFF"..."""
    size: tuple[int, int]
    """(width, height) after orientation."""
    frames: int = 1
    """Frames in the file (animations, multi-page TIFFs); only the first is decoded."""


@contextmanager
def _pillow_limit() -> Iterator[int | None]:
    """Hold the lock that lets a read change ``Image.MAX_IMAGE_PIXELS``; yields and restores its value."""
    with _PILLOW_LIMIT, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        # Pillow warns about damaged metadata ("Corrupt EXIF data") on stderr; the pixels still
        # decode, and what is unusable of the metadata is dropped.
        warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
        previous = Image.MAX_IMAGE_PIXELS
        try:
            yield previous
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def sniff_image(path: str | os.PathLike) -> bool:
    """Whether the file's content (not its name) is an image Pillow can open; reads the header only."""
    try:
        with _pillow_limit():
            Image.MAX_IMAGE_PIXELS = None
            with Image.open(path):
                return True
    except (OSError, ValueError, SyntaxError, EOFError):
        return False


def read_picture(path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Picture:
    """Decode an image file (first frame) for the model; None for ``max_pixels`` lifts the size limit.

    The size is checked from the header, before pixels are decoded. Pillow's own limit stays in force
    except that a ``max_pixels`` above it applies to this call; since that limit is process-wide, reads
    take turns (a lock) while it is changed. Unreadable, damaged, tiny or too large files raise YodaError.
    """
    source = Path(path)
    try:
        if source.is_dir():
            raise YodaError(f"{source}: is a folder, not an image")
        if source.is_symlink() and not source.exists():
            raise YodaError(f"{source}: is a symbolic link that loops or points to nothing; fix or remove the link")
        if source.stat().st_size == 0:
            raise YodaError(f"{source}: is empty (0 bytes); copy it again or remove it")
        with _pillow_limit() as pillow_max, _open(source) as image:
            _check_size(source, image.size, max_pixels)
            if max_pixels is None or pillow_max is None:
                Image.MAX_IMAGE_PIXELS = None
            else:
                Image.MAX_IMAGE_PIXELS = max(pillow_max, max_pixels)
            rawmodes = tile_rawmodes(image)
            image.load()
            colour, alpha = wide_samples(source, image, rawmodes) or _samples(image)
            picture_format = "JPEG" if image.format == "MPO" else str(image.format)
            icc_profile, exif, orientation = _metadata(image)
            frames = int(getattr(image, "n_frames", 1) or 1)
    except FileNotFoundError:
        raise YodaError(f"{source}: no such file") from None
    except PermissionError:
        raise YodaError(f"{source}: cannot be read (permission denied); check its permissions") from None
    except Image.DecompressionBombError as error:
        raise YodaError(f"{source}: {error} Raise {setting('max_pixels')} to allow it.") from None
    except MemoryError:
        raise YodaError(
            f"{source}: not enough memory to decode it; lower {setting('max_pixels')} to skip such images"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise YodaError(f"{source}: is truncated or damaged ({error}); copy or export it again") from None
    if orientation in _ORIENT:
        colour = _ORIENT[orientation](colour)
        alpha = None if alpha is None else _ORIENT[orientation](alpha)
    grey = colour.shape[2] == 1
    rgb = np.repeat(colour, 3, axis=2) if grey else np.ascontiguousarray(colour)
    return Picture(
        rgb=rgb,
        alpha=None if alpha is None else np.ascontiguousarray(alpha),
        grey=grey,
        bits=16 if rgb.dtype == np.uint16 else 8,
        icc_profile=icc_profile,
        exif=exif,
        source_format=picture_format,
        size=(rgb.shape[1], rgb.shape[0]),
        frames=frames,
    )


@contextmanager
def _open(source: Path) -> Iterator[ImageFile.ImageFile]:
    """``Image.open`` without Pillow's size limit (the caller checks the size); only the header is read."""
    Image.MAX_IMAGE_PIXELS = None
    try:
        image = Image.open(source)
    except UnidentifiedImageError:
        raise YodaError(
            f"{source}: is not an image Pillow can read (judged by its content, whatever its name); remove it"
        ) from None
    with image:
        yield image


def _check_size(source: Path, size: tuple[int, int], max_pixels: int | None) -> None:
    """Refuse images too small to upscale or larger than ``max_pixels``."""
    width, height = size
    if min(width, height) < MIN_SIDE:
        raise YodaError(f"{source}: is only {width}x{height} pixels; images need at least {MIN_SIDE} pixels a side")
    if max_pixels is not None and width * height > max_pixels:
        raise YodaError(
            f"{source}: is {width}x{height} = {width * height:,} pixels, more than the limit of {max_pixels:,}; "
            f"pass {setting('max_pixels', width * height)} to allow it"
        )


def _samples(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """(H x W x 1 grey or H x W x 3 colour, H x W alpha or None) of a loaded image, uint8 or uint16."""
    mode = image.mode
    if mode in ("1", "L", "LA", "La"):
        array = np.asarray(image.convert("L" if mode in ("1", "L") else "LA"))
    elif mode.startswith("I;16"):
        array = np.asarray(image).astype(np.uint16)
    elif mode in ("I", "F"):
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        if mode == "F" and values.max(initial=0.0) <= 1.0:
            values = values * 65535.0
        array = np.clip(np.round(values), 0, 65535).astype(np.uint16)
    elif mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in image.info):
        array = np.asarray(image.convert("RGBA"))
    else:
        array = np.asarray(image.convert("RGB"))
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] in (2, 4):
        return array[:, :, :-1], array[:, :, -1]
    key = image.info.get("transparency")
    if (mode in ("L", "RGB") or mode.startswith("I;16")) and isinstance(key, (int, tuple)):
        opaque = np.any(array != np.asarray(key, dtype=array.dtype).reshape(-1), axis=2)
        return array, (opaque * np.iinfo(array.dtype).max).astype(array.dtype)
    return array, None


def _metadata(image: Image.Image) -> tuple[bytes | None, bytes | None, int]:
    """(ICC profile, EXIF with Orientation 1, orientation to apply) of a loaded image."""
    icc_profile = image.info.get("icc_profile") or None
    if icc_profile is not None and _profile_space(icc_profile) not in ("RGB", "GRAY"):
        icc_profile = None
    exif = image.getexif()
    orientation = exif.get(_ORIENTATION, 1)
    if not exif or image.format == "TIFF":
        return icc_profile, None, orientation
    if orientation != 1:
        exif[_ORIENTATION] = 1
        data = exif.tobytes()
    else:
        data = image.info.get("exif") or exif.tobytes()
    return icc_profile, data if data.startswith(EXIF_PREFIX) else EXIF_PREFIX + data, orientation


def _profile_space(icc_profile: bytes) -> str:
    """The colour space an ICC profile describes ("RGB", "GRAY", "CMYK"...), from its header."""
    return icc_profile[16:20].decode("latin-1").strip() if len(icc_profile) >= 128 else ""


def _format_name(text: str) -> str:
    """Our name (png, jpg, webp, tiff) for a format or extension, e.g. "JPEG" or ".tif"; others lower-cased."""
    name = text.lower().lstrip(".")
    return _NAMES.get(name, name)


def _holds(pillow_format: str, alpha: bool, bits: int, grey: bool) -> bool:
    """Whether a format stores an image with this alpha, bit depth and greyness as it is."""
    if pillow_format == "JPEG":
        return not alpha and bits == 8
    if pillow_format == "WEBP":
        return bits == 8
    if pillow_format == "TIFF":
        return bits == 8 or (grey and not alpha)
    return True


def output_format(
    source_format: str, requested: str = "auto", *, alpha: bool = False, bits: int = 8, grey: bool = False
) -> tuple[str, str]:
    """(Pillow format, extension) for a result: ``requested`` is auto, png, jpg, webp or tiff.

    auto keeps the source's format when it holds the result as it is, else PNG. An explicit jpg, webp
    or tiff stores 16-bit colour at 8 bits; jpg with alpha raises YodaError (the caller names the file).
    """
    choice = _format_name(requested)
    if choice == "auto":
        source = _FORMATS.get(_format_name(source_format))
        chosen = source if source is not None and _holds(source[0], alpha, bits, grey) else _FORMATS["png"]
    elif choice in _FORMATS:
        chosen = _FORMATS[choice]
    else:
        raise SettingError("format", f"unknown output format {requested!r}; choose auto, png, jpg, webp or tiff")
    if chosen[0] == "JPEG" and alpha:
        raise SettingError("format", "JPEG cannot store transparency; choose png, webp or tiff for images with alpha")
    return chosen


def write_picture(
    path: str | os.PathLike,
    rgb: np.ndarray,
    *,
    alpha: np.ndarray | None = None,
    grey: bool = False,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    format: str | None = None,
    quality: int = 95,
) -> Path:
    """Write H x W x 3 (or H x W) uint8/uint16 ``rgb`` atomically; returns the path written.

    ``format`` (png, jpg, webp, tiff or a Pillow name) defaults to the extension's. ``grey`` stores the
    channel mean as greyscale (WebP has no greyscale: it gets RGB). 16-bit samples are written as 16-bit
    PNG, and as 16-bit TIFF when grey without alpha; other formats get 8 bits. A profile whose colour
    space does not match the written channels is left out; TIFFs get no EXIF. JPEGs use 4:4:4 chroma.
    """
    target = Path(path)
    name = _format_name(format or target.suffix)
    if name not in _FORMATS:
        raise YodaError(
            f"{target}: cannot write {format or target.suffix or 'files without extension'}; "
            "use .png, .jpg, .webp or .tif"
        )
    pillow_format = _FORMATS[name][0]
    if alpha is not None and pillow_format == "JPEG":
        raise YodaError(f"{target}: JPEG cannot store transparency; choose {setting('format', 'png')}, webp or tiff")
    samples = _channels(rgb, alpha, grey and pillow_format != "WEBP")
    has_alpha = alpha is not None
    if samples.dtype == np.uint16 and not _holds(pillow_format, has_alpha, 16, samples.shape[2] - has_alpha == 1):
        samples = ((samples.astype(np.uint32) + 128) // 257).astype(np.uint8)
    space = "GRAY" if samples.shape[2] <= 2 else "RGB"
    if icc_profile is not None and _profile_space(icc_profile) != space:
        icc_profile = None
    if pillow_format == "TIFF":
        exif = None
    elif exif is not None and not exif.startswith(EXIF_PREFIX):
        exif = EXIF_PREFIX + exif
    large = samples.shape[0] * samples.shape[1] > _PILLOW_PNG_PIXELS
    if pillow_format == "PNG" and (samples.dtype == np.uint16 or large):
        _write_atomically(target, lambda handle: encode_png(handle, samples, icc_profile, exif))
        return target
    image = Image.fromarray(samples[:, :, 0] if samples.shape[2] == 1 else samples)
    options: dict[str, object] = {"icc_profile": icc_profile, "exif": exif}
    if pillow_format in ("JPEG", "WEBP"):
        options["quality"] = quality
    if pillow_format == "JPEG":
        options["subsampling"] = 0
    if pillow_format == "TIFF" and features.check("libtiff"):
        options["compression"] = "tiff_deflate"
    options = {key: value for key, value in options.items() if value is not None}
    _write_atomically(target, lambda handle: image.save(handle, format=pillow_format, **options))
    return target


def _channels(rgb: np.ndarray, alpha: np.ndarray | None, grey: bool) -> np.ndarray:
    """H x W x C samples to write: C is 1 or 3 (grey or colour), plus 1 with alpha."""
    if rgb.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"images must be uint8 or uint16, got {rgb.dtype}")
    colour = rgb[:, :, None] if rgb.ndim == 2 else rgb
    if colour.ndim != 3 or colour.shape[2] not in (1, 3):
        raise ValueError(f"expected an H x W x 3 or H x W image, got shape {rgb.shape}")
    if grey and colour.shape[2] == 3:
        colour = ((colour.astype(np.uint32).sum(axis=2, keepdims=True) + 1) // 3).astype(rgb.dtype)
    elif not grey and colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    if alpha is None:
        return np.ascontiguousarray(colour)
    if alpha.dtype != rgb.dtype or alpha.shape != colour.shape[:2]:
        raise ValueError(f"alpha must be {colour.shape[:2]} {rgb.dtype}, got {alpha.shape} {alpha.dtype}")
    return np.concatenate([colour, alpha[:, :, None]], axis=2)


def _write_atomically(target: Path, write: Callable[[BinaryIO], object]) -> None:
    """``fsutil.atomic_write`` with a refusal to write an empty file and errors as one line."""

    def write_nonempty(handle: BinaryIO) -> None:
        write(handle)
        handle.flush()
        if handle.tell() == 0:
            raise YodaError(f"{target}: the encoder wrote nothing; no file was written")

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, write_nonempty)
    except (OSError, ValueError, RuntimeError) as error:
        raise YodaError(f"{target}: cannot write it ({getattr(error, 'strerror', None) or error})") from None


def save_png(image: Image.Image | np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Save a picture we drew (PIL image or H x W [x 3] uint8 array) as a PNG, atomically."""
    target = Path(path)
    if isinstance(image, Image.Image):
        picture = image
    else:
        array = np.asarray(image)
        if array.dtype == np.uint8 and array.shape[0] * array.shape[1] > _PILLOW_PNG_PIXELS:  # no 4 B/px copy
            samples = array[:, :, None] if array.ndim == 2 else array
            _write_atomically(target, lambda handle: encode_png(handle, samples, None, None))
            return target
        picture = Image.fromarray(array)
    _write_atomically(target, lambda handle: picture.save(handle, format="PNG"))
    return target
