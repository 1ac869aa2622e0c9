"""Reading and writing photos on real images: orientation, modes, 16 bits, metadata, atomic writes, errors."""

from __future__ import annotations

import os
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps
from skimage import data

from yoda_sr.errors import SettingError, YodaError
from yoda_sr.image.io import (
    DEFAULT_MAX_PIXELS,
    MIN_SIDE,
    output_format,
    read_picture,
    save_png,
    sniff_image,
    write_picture,
)

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
MAKE, EXIF_IFD, DATE_TAKEN, ORIENTATION = 0x010F, 0x8769, 0x9003, 0x0112


def camera_exif(orientation: int | None = None) -> bytes:
    """EXIF as a camera writes it: a maker, a date in the Exif sub-IFD and optionally an orientation."""
    exif = Image.Exif()
    exif[MAKE] = "YodaCam"
    exif.get_ifd(EXIF_IFD)[DATE_TAKEN] = "2024:05:06 07:08:09"
    if orientation is not None:
        exif[ORIENTATION] = orientation
    return exif.tobytes()


def parse_exif(raw: bytes) -> Image.Exif:
    exif = Image.Exif()
    exif.load(raw)
    return exif


def sixteen_bit(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """A uint16 version of a uint8 photo whose low bytes carry information too."""
    noise = np.random.default_rng(seed).integers(0, 256, image.shape, dtype=np.uint16)
    return image.astype(np.uint16) * 256 + noise


def chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png16_bytes(samples: np.ndarray) -> bytes:
    """A 16-bit PNG (filter 0 on every row) of H x W x C uint16 samples, written independently of yoda_sr."""
    height, width, channels = samples.shape
    rows = np.ascontiguousarray(samples, dtype=">u2").view(np.uint8).reshape(height, -1)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", width, height, 16, {1: 0, 2: 4, 3: 2, 4: 6}[channels], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def decode_png16(path: Path) -> tuple[np.ndarray, dict[bytes, bytes]]:
    """Samples (H x W x C uint16) and other chunks of a non-interlaced 16-bit PNG using filters 0 and 1."""
    blob = path.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat, chunks = 8, b"", {}
    while position < len(blob):
        (length,) = struct.unpack(">I", blob[position : position + 4])
        kind, payload = blob[position + 4 : position + 8], blob[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", blob[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + payload), kind
        if kind == b"IDAT":
            idat += payload
        else:
            chunks[kind] = payload
        position += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert depth == 16 and chunks[b"IHDR"][12] == 0
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[colour_type]
    lines = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * channels * 2)
    pixels = lines[:, 1:].reshape(height, width, channels * 2).copy()
    assert set(np.unique(lines[:, 0])) <= {0, 1}
    sub = lines[:, 0] == 1
    pixels[sub] = np.cumsum(pixels[sub], axis=1, dtype=np.uint8)
    samples = pixels.reshape(height, width * channels * 2).view(">u2").reshape(height, width, channels)
    return samples.astype(np.uint16), chunks


# Reading


@pytest.mark.parametrize(("orientation", "turns"), [(6, 1), (3, 2), (8, -1)])
def test_exif_orientation_of_a_camera_jpeg_is_applied_and_reset(tmp_path: Path, orientation: int, turns: int):
    upright = data.chelsea()  # 300 x 451
    stored = np.ascontiguousarray(np.rot90(upright, turns))  # how the sensor saw it
    path = tmp_path / "cat.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=camera_exif(orientation))
    picture = read_picture(path)
    assert picture.size == (451, 300) and picture.rgb.shape == upright.shape
    assert np.abs(picture.rgb.astype(int) - upright).mean() < 2.0
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    np.testing.assert_array_equal(picture.rgb, expected)
    exif = parse_exif(picture.exif)
    assert exif[ORIENTATION] == 1 and exif[MAKE] == "YodaCam"
    assert exif.get_ifd(EXIF_IFD)[DATE_TAKEN] == "2024:05:06 07:08:09"
    assert picture.source_format == "JPEG" and picture.alpha is None and not picture.grey and picture.bits == 8


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pillows_transpose_exactly(tmp_path: Path, orientation: int):
    image = Image.fromarray(np.dstack([data.chelsea(), data.chelsea()[:, :, 0]]))  # RGBA, not square
    path = tmp_path / "cat.png"
    image.save(path, exif=camera_exif(orientation))
    picture = read_picture(path)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    np.testing.assert_array_equal(picture.rgb, expected[:, :, :3])
    np.testing.assert_array_equal(picture.alpha, expected[:, :, 3])
    assert picture.size == (expected.shape[1], expected.shape[0])
    assert parse_exif(picture.exif)[ORIENTATION] == 1


def test_rgba_gives_rgb_and_alpha(tmp_path: Path):
    rgb = data.astronaut()
    alpha = np.tile(np.arange(512, dtype=np.uint16) // 2, (512, 1)).astype(np.uint8)
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "a.png")
    picture = read_picture(tmp_path / "a.png")
    np.testing.assert_array_equal(picture.rgb, rgb)
    np.testing.assert_array_equal(picture.alpha, alpha)
    assert (picture.grey, picture.bits, picture.exif, picture.icc_profile) == (False, 8, None, None)


def test_grey_with_alpha_gives_grey(tmp_path: Path):
    grey = data.camera()
    Image.fromarray(np.dstack([grey, grey[::-1]])).save(tmp_path / "la.png")
    picture = read_picture(tmp_path / "la.png")
    assert picture.grey and picture.rgb.shape == (512, 512, 3)
    for channel in range(3):
        np.testing.assert_array_equal(picture.rgb[:, :, channel], grey)
    np.testing.assert_array_equal(picture.alpha, grey[::-1])


def test_palette_with_and_without_transparency(tmp_path: Path):
    palette = Image.fromarray(data.chelsea()).quantize(64)
    palette.save(tmp_path / "opaque.png")
    palette.save(tmp_path / "holes.png", transparency=0)
    opaque, holes = read_picture(tmp_path / "opaque.png"), read_picture(tmp_path / "holes.png")
    np.testing.assert_array_equal(opaque.rgb, np.asarray(palette.convert("RGB")))
    assert opaque.alpha is None and not opaque.grey
    np.testing.assert_array_equal(holes.rgb, opaque.rgb)
    index = np.asarray(palette)
    assert 0 < (index == 0).sum() < index.size
    np.testing.assert_array_equal(holes.alpha, np.where(index == 0, 0, 255))


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_transparent_colour_key_becomes_alpha(tmp_path: Path, mode: str):
    image = Image.fromarray(data.camera()).convert(mode)
    key = 255 if mode == "L" else (255, 255, 255)
    image.save(tmp_path / "key.png", transparency=key)
    picture = read_picture(tmp_path / "key.png")
    white = data.camera() == 255
    assert white.any() and not white.all()
    np.testing.assert_array_equal(picture.alpha, np.where(white, 0, 255))


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path: Path):
    rgb = data.astronaut()
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "print.jpg", quality=95)
    picture = read_picture(tmp_path / "print.jpg")
    assert picture.rgb.dtype == np.uint8 and picture.rgb.shape == rgb.shape and not picture.grey
    assert np.abs(picture.rgb.astype(int) - rgb).mean() < 3.0


def test_one_bit_image_is_grey(tmp_path: Path):
    bits = data.camera() > 100
    Image.fromarray(bits).save(tmp_path / "fax.png")
    picture = read_picture(tmp_path / "fax.png")
    assert picture.grey and picture.bits == 8
    np.testing.assert_array_equal(picture.rgb[:, :, 1], np.where(bits, 255, 0))


def test_sixteen_bit_grey_png_keeps_sixteen_bits(tmp_path: Path):
    grey = sixteen_bit(data.camera())
    Image.fromarray(grey).save(tmp_path / "scan.png")
    picture = read_picture(tmp_path / "scan.png")
    assert picture.grey and picture.bits == 16 and picture.rgb.dtype == np.uint16
    for channel in range(3):
        np.testing.assert_array_equal(picture.rgb[:, :, channel], grey)


@pytest.mark.parametrize("channels", [3, 4, 2])
def test_sixteen_bit_colour_and_grey_alpha_pngs_keep_their_low_bytes(tmp_path: Path, channels: int):
    # Pillow alone gives only the high byte of each sample (and RGBA for grey + alpha).
    layers = {2: [3, 0], 3: [0, 1, 2], 4: [0, 1, 2, 3]}[channels]  # astronaut's R, G, B and the camera man
    samples = sixteen_bit(np.dstack([data.astronaut(), data.camera()])[:, :, layers])
    (tmp_path / "deep.png").write_bytes(png16_bytes(samples))
    picture = read_picture(tmp_path / "deep.png")
    assert picture.bits == 16 and picture.rgb.dtype == np.uint16
    assert (picture.alpha is None) == (channels == 3)
    colour = samples[:, :, :1] if channels == 2 else samples[:, :, :3]
    np.testing.assert_array_equal(picture.rgb, np.broadcast_to(colour, picture.rgb.shape))
    assert picture.grey == (channels == 2)
    if channels != 3:
        np.testing.assert_array_equal(picture.alpha, samples[:, :, -1])


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_sixteen_bit_colour_tiff_keeps_its_low_bytes(tmp_path: Path, compression: str | None):
    tifffile = pytest.importorskip("tifffile")
    samples = sixteen_bit(data.chelsea())
    tifffile.imwrite(tmp_path / "scan.tif", samples, photometric="rgb", compression=compression)
    picture = read_picture(tmp_path / "scan.tif")
    assert picture.bits == 16 and picture.source_format == "TIFF"
    np.testing.assert_array_equal(picture.rgb, samples)


# Writing


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_a_very_large_eight_bit_png_is_written_in_rows_and_reads_back(tmp_path: Path, channels: int, monkeypatch):
    """Above _PILLOW_PNG_PIXELS our encoder writes 8-bit PNGs (Pillow would first copy the image at
    4 bytes a pixel): Pillow reads the same samples, profile and EXIF back."""
    import yoda_sr.image.io as io

    photo = np.dstack([data.astronaut(), data.camera()])
    samples = photo[:, :, [0, 3] if channels == 2 else list(range(channels))]
    grey = channels <= 2
    rgb = np.repeat(samples[:, :, :1], 3, axis=2) if grey else samples[:, :, :3]
    alpha = samples[:, :, -1] if channels in (2, 4) else None
    monkeypatch.setattr(io, "_PILLOW_PNG_PIXELS", 512 * 512 - 1)
    path = write_picture(
        tmp_path / "out.png", rgb, alpha=alpha, grey=grey, icc_profile=None if grey else SRGB, exif=camera_exif(1)
    )
    blob = path.read_bytes()
    start = blob.index(b"IDAT") + 4
    assert zlib.decompressobj().decompress(blob[start:], 1)[0] == 1  # the Sub filter: ours, not Pillow's
    with Image.open(path) as image:
        assert image.mode == {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
        np.testing.assert_array_equal(np.asarray(image).reshape(samples.shape), samples)
        assert image.info.get("icc_profile") == (None if grey else SRGB)
    assert parse_exif(read_picture(path).exif)[MAKE] == "YodaCam"


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_sixteen_bit_png_writer_round_trips(tmp_path: Path, channels: int):
    photo = np.dstack([data.astronaut(), data.camera()])
    samples = sixteen_bit(photo[:, :, [0, 3] if channels == 2 else list(range(channels))], seed=channels)
    grey = channels <= 2
    rgb = np.repeat(samples[:, :, :1], 3, axis=2) if grey else samples[:, :, :3]
    alpha = samples[:, :, -1] if channels in (2, 4) else None
    path = write_picture(
        tmp_path / "out.png", rgb, alpha=alpha, grey=grey, icc_profile=None if grey else SRGB, exif=camera_exif(1)
    )
    decoded, chunks = decode_png16(path)
    np.testing.assert_array_equal(decoded, samples)
    assert chunks[b"eXIf"] == camera_exif(1)[6:]
    if not grey:
        assert chunks[b"iCCP"].startswith(b"ICC Profile\x00\x00")
        assert zlib.decompress(chunks[b"iCCP"][13:]) == SRGB
    with Image.open(path) as image:  # Pillow accepts the file (it checks the CRCs) and reads the high bytes
        assert image.info.get("icc_profile") == (None if grey else SRGB)
    again = read_picture(path)
    np.testing.assert_array_equal(again.rgb, rgb)
    assert again.grey == grey and again.bits == 16
    assert parse_exif(again.exif)[MAKE] == "YodaCam"


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
def test_icc_profile_and_exif_are_kept(tmp_path: Path, suffix: str):
    rgb = data.astronaut()
    path = write_picture(tmp_path / f"out{suffix}", rgb, icc_profile=SRGB, exif=camera_exif(1))
    with Image.open(path) as image:
        assert image.info["icc_profile"] == SRGB
        pixels = np.asarray(image.convert("RGB"))
    if suffix in (".png", ".tif"):
        np.testing.assert_array_equal(pixels, rgb)
    else:
        assert np.abs(pixels.astype(int) - rgb).mean() < 3.0
    picture = read_picture(path)
    if suffix == ".tif":  # TIFF tags describe the file itself; no EXIF is carried into or out of TIFFs
        assert picture.exif is None
    else:
        assert parse_exif(picture.exif).get_ifd(EXIF_IFD)[DATE_TAKEN] == "2024:05:06 07:08:09"


@pytest.mark.parametrize(
    ("suffix", "dtype", "with_alpha", "mode"),
    [
        (".png", np.uint8, False, "L"),
        (".png", np.uint8, True, "LA"),
        (".jpg", np.uint8, False, "L"),
        (".tif", np.uint8, True, "LA"),
        (".tif", np.uint16, False, "I;16"),
        (".png", np.uint16, False, "I;16"),
        (".webp", np.uint8, False, "RGB"),
    ],
)
def test_grey_is_written_as_grey(tmp_path: Path, suffix: str, dtype: type, with_alpha: bool, mode: str):
    grey = data.camera().astype(dtype) * (257 if dtype == np.uint16 else 1)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    alpha = grey[::-1].copy() if with_alpha else None
    path = write_picture(tmp_path / f"out{suffix}", rgb, alpha=alpha, grey=True)
    with Image.open(path) as image:
        assert image.mode.startswith(mode)
    picture = read_picture(path)
    assert picture.grey == (suffix != ".webp") and picture.rgb.dtype == dtype
    if suffix not in (".jpg", ".webp"):
        np.testing.assert_array_equal(picture.rgb[:, :, 0], grey)


def test_grey_output_averages_the_models_channels(tmp_path: Path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 11, 13
    write_picture(tmp_path / "g.png", rgb, grey=True)
    assert np.asarray(Image.open(tmp_path / "g.png")).tolist() == [[11] * 8] * 8


def test_sixteen_bits_into_eight_bit_formats_are_rounded(tmp_path: Path):
    rgb = sixteen_bit(data.astronaut())
    write_picture(tmp_path / "out.webp", rgb, format="webp", quality=100)
    write_picture(tmp_path / "out.tif", rgb)
    with Image.open(tmp_path / "out.tif") as image:
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), np.round(rgb / 257).astype(np.uint8))
    assert read_picture(tmp_path / "out.webp").bits == 8


def test_output_format_choices():
    assert output_format("PNG") == ("PNG", ".png")
    assert output_format("JPEG") == ("JPEG", ".jpg")
    assert output_format("MPO") == ("JPEG", ".jpg")
    assert output_format("WEBP", alpha=True) == ("WEBP", ".webp")
    assert output_format("TIFF", bits=16, grey=True) == ("TIFF", ".tif")
    assert output_format("TIFF", bits=16) == ("PNG", ".png")
    assert output_format("JPEG", alpha=True) == ("PNG", ".png")
    assert output_format("JPEG", bits=16, grey=True) == ("PNG", ".png")
    assert output_format("GIF") == ("PNG", ".png")
    assert output_format("BMP", "jpeg") == ("JPEG", ".jpg")
    assert output_format("PNG", "JPG", bits=16) == ("JPEG", ".jpg")
    assert output_format("PNG", "tif") == ("TIFF", ".tif")
    with pytest.raises(YodaError, match="transparency"):
        output_format("PNG", "jpg", alpha=True)
    with pytest.raises(SettingError, match="unknown output format .gif."):
        output_format("PNG", "gif")


def test_jpeg_with_alpha_is_refused_and_writes_nothing(tmp_path: Path):
    with pytest.raises(YodaError, match=r"out\.jpg: JPEG cannot store transparency"):
        write_picture(tmp_path / "out.jpg", data.astronaut(), alpha=data.camera())
    assert list(tmp_path.iterdir()) == []


def test_writes_create_folders_and_leave_only_the_output(tmp_path: Path):
    target = tmp_path / "deep" / "er" / "out.png"
    assert write_picture(target, data.astronaut()) == target
    assert [p.name for p in target.parent.iterdir()] == ["out.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_failed_write_keeps_the_old_output_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"previous result")

    def full_disk(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(YodaError, match="out.png: cannot write it .No space left on device"):
        write_picture(target, data.astronaut())
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
    assert target.read_bytes() == b"previous result"


def test_encoder_failure_leaves_no_file(tmp_path: Path):
    too_long = b"Exif\x00\x00" + bytes(70_000)  # more than a JPEG marker holds; Pillow fails mid-write
    with pytest.raises(YodaError, match=r"out\.jpg: cannot write it"):
        write_picture(tmp_path / "out.jpg", data.astronaut(), exif=too_long)
    assert list(tmp_path.iterdir()) == []


def test_unicode_file_names(tmp_path: Path):
    path = tmp_path / "café – 写真" / "café – 写真.png"
    write_picture(path, data.chelsea())
    assert sniff_image(path)
    np.testing.assert_array_equal(read_picture(path).rgb, data.chelsea())


# Errors and limits


def one_line_error(path: Path, **options: object) -> str:
    with pytest.raises(YodaError) as caught:
        read_picture(path, **options)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
def test_truncated_files_are_reported(tmp_path: Path, suffix: str):
    whole = tmp_path / f"whole{suffix}"
    Image.fromarray(data.astronaut()).save(whole)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert "is truncated or damaged" in one_line_error(cut)


def test_empty_missing_folder_and_not_an_image(tmp_path: Path):
    (tmp_path / "empty.png").touch()
    (tmp_path / "notes.png").write_text("shopping list: milk, eggs\n" * 20)
    assert "is empty (0 bytes)" in one_line_error(tmp_path / "empty.png")
    assert "no such file" in one_line_error(tmp_path / "gone.png")
    assert "is a folder" in one_line_error(tmp_path)
    assert "is not an image" in one_line_error(tmp_path / "notes.png")
    assert not sniff_image(tmp_path / "empty.png") and not sniff_image(tmp_path / "notes.png")
    assert not sniff_image(tmp_path / "gone.png") and not sniff_image(tmp_path)


def test_sniffing_goes_by_content(tmp_path: Path):
    Image.fromarray(data.camera()).save(tmp_path / "photo.txt", format="PNG")
    assert sniff_image(tmp_path / "photo.txt")
    assert read_picture(tmp_path / "photo.txt").source_format == "PNG"


@pytest.mark.parametrize("size", [(1, 1), (MIN_SIDE - 1, 50), (50, MIN_SIDE - 1)])
def test_tiny_images_are_refused(tmp_path: Path, size: tuple[int, int]):
    Image.new("RGB", size).save(tmp_path / "dot.png")
    assert f"at least {MIN_SIDE} pixels a side" in one_line_error(tmp_path / "dot.png")
    Image.new("RGB", (MIN_SIDE, MIN_SIDE)).save(tmp_path / "ok.png")
    assert read_picture(tmp_path / "ok.png").size == (MIN_SIDE, MIN_SIDE)


def test_huge_header_fails_fast_without_decoding(tmp_path: Path):
    bomb = tmp_path / "bomb.png"
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)  # 30 GB of RGB
    idat = zlib.compress(bytes(1 + 3 * 100_000))  # one row
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    assert sniff_image(bomb)
    start = time.perf_counter()
    message = one_line_error(bomb)
    assert time.perf_counter() - start < 1.0
    assert "100000x100000" in message and "max_pixels=10000000000" in message
    assert f"{DEFAULT_MAX_PIXELS:,}" in message


def test_max_pixels_is_the_users_limit_and_pillows_stays_global(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    Image.fromarray(data.astronaut()).save(tmp_path / "a.png")
    assert "pass max_pixels=262144" in one_line_error(tmp_path / "a.png", max_pixels=512 * 511)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_picture(tmp_path / "a.png", max_pixels=512 * 512).size == (512, 512)
        assert read_picture(tmp_path / "a.png", max_pixels=None).size == (512, 512)
    assert Image.MAX_IMAGE_PIXELS == 1000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / "a.png")


@pytest.mark.parametrize("grey", [True, False])
def test_a_very_large_picture_we_drew_is_saved_in_rows_too(tmp_path: Path, grey: bool, monkeypatch):
    import yoda_sr.image.io as io

    picture = data.camera() if grey else data.astronaut()
    monkeypatch.setattr(io, "_PILLOW_PNG_PIXELS", 512 * 512 - 1)
    path = save_png(picture, tmp_path / "map.png")
    blob = path.read_bytes()
    assert zlib.decompressobj().decompress(blob[blob.index(b"IDAT") + 4 :], 1)[0] == 1  # our Sub filter
    with Image.open(path) as image:
        np.testing.assert_array_equal(np.asarray(image), picture)
