"""PNG where Pillow falls short: reading 16-bit low bytes back, writing 16-bit and very large PNGs.

Pillow decodes 16-bit colour (and grey+alpha) PNGs to 8 bits per sample; ``wide_samples`` decodes
the file again with the opposite byte order to recover the low bytes. Pillow cannot write them, and
writes an 8-bit RGB image from a copy of 4 bytes a pixel (3 GiB more for an 800 MP output), so
``encode_png`` is a small PNG encoder of its own (IHDR, iCCP, eXIf, Sub-filtered IDAT, IEND) that
encodes 64 rows at a time from the caller's array.
"""

from __future__ import annotations

import re
import struct
import sys
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

EXIF_PREFIX = b"Exif\x00\x00"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_HIGH_BYTES = re.compile(r"(RGBA?);16([BLN])")


def wide_samples(source: Path, image: Image.Image, rawmodes: set[str]) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Full 16-bit samples of 16-bit colour or grey+alpha images that Pillow decodes to 8 bits, else None.

    Decoding again with the opposite byte order gives the low bytes; 16-bit grey+alpha PNGs decode in
    one pass as RGBA bytes (grey high, grey low, alpha high, alpha low).
    """
    match = _HIGH_BYTES.fullmatch(next(iter(rawmodes))) if len(rawmodes) == 1 else None
    try:
        if rawmodes == {"LA;16B"}:
            both = _decode_as(source, "RGBA").astype(np.uint16)
            return (both[:, :, 0:1] << 8) | both[:, :, 1:2], (both[:, :, 2] << 8) | both[:, :, 3]
        if match is None:
            return None
        order = {"N": "L" if sys.byteorder == "little" else "B"}.get(match[2], match[2])
        low = _decode_as(source, f"{match[1]};16{'B' if order == 'L' else 'L'}")
    except (OSError, ValueError):
        return None
    full = (np.asarray(image).astype(np.uint16) << 8) | low
    return (full[:, :, :3], full[:, :, 3]) if full.shape[2] == 4 else (full, None)


def tile_rawmodes(image: Image.Image) -> set[str]:
    """The raw modes of a not yet loaded image's tiles (what ``wide_samples`` needs to know)."""
    modes = set()
    for tile in getattr(image, "tile", []):
        args = tile[3]
        if isinstance(args, tuple) and args:
            args = args[0]
        modes.add(args if isinstance(args, str) else "")
    return modes


def _decode_as(source: Path, rawmode: str) -> np.ndarray:
    """Decode the first frame of ``source`` again, unpacking its data with ``rawmode``."""
    with Image.open(source) as image:
        tiles: list[Any] = []  # Pillow's tile type differs between versions
        for tile in image.tile:
            args = (rawmode, *tile[3][1:]) if isinstance(tile[3], tuple) else rawmode
            tiles.append(tile._replace(args=args) if hasattr(tile, "_replace") else (*tile[:3], args))
        image.tile = tiles
        image.load()
        return np.asarray(image)


def encode_png(handle: BinaryIO, samples: np.ndarray, icc_profile: bytes | None, exif: bytes | None) -> None:
    """Write H x W x C uint8 or uint16 ``samples`` (C = 1 to 4: grey, grey+alpha, RGB, RGBA) as an 8-
    or 16-bit PNG.

    Every row uses the Sub filter (each byte minus the same byte of the previous pixel), which makes
    photos compress much better than no filter; IDAT is written in pieces of about 1 MiB. Memory
    beyond ``samples`` is that of 64 rows.
    """

    def chunk(kind: bytes, data: bytes) -> None:
        handle.write(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data)))

    if samples.dtype not in (np.uint8, np.uint16) or samples.ndim != 3 or not 1 <= samples.shape[2] <= 4:
        raise ValueError(f"expected H x W x 1-4 uint8 or uint16 samples, got {samples.shape} {samples.dtype}")
    height, width, channels = samples.shape
    depth = samples.dtype.itemsize
    handle.write(_PNG_SIGNATURE)
    chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8 * depth, (0, 4, 2, 6)[channels - 1], 0, 0, 0))
    if icc_profile:
        chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile))
    if exif:
        chunk(b"eXIf", exif.removeprefix(EXIF_PREFIX))
    step = channels * depth
    big_endian = ">u2" if depth == 2 else np.uint8
    compressor = zlib.compressobj(6)
    pending = b""
    for top in range(0, height, 64):
        rows = np.ascontiguousarray(samples[top : top + 64], dtype=big_endian).view(np.uint8).reshape(-1, width * step)
        lines = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
        lines[:, 0] = 1
        lines[:, 1 : step + 1] = rows[:, :step]
        np.subtract(rows[:, step:], rows[:, :-step], out=lines[:, step + 1 :])
        pending += compressor.compress(lines.tobytes())
        if len(pending) >= 1 << 20:
            chunk(b"IDAT", pending)
            pending = b""
    chunk(b"IDAT", pending + compressor.flush())
    chunk(b"IEND", b"")
