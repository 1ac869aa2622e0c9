"""Cleaning the LR: JPEG quality and noise found from the pixels, deblocking and denoising, wiring."""

from __future__ import annotations

import json

import numpy as np
import pytest

from yoda_sr.api import Settings, Upscaler
from yoda_sr.errors import SettingError
from yoda_sr.evaluation.baselines import degrade
from yoda_sr.evaluation.metrics import psnr
from yoda_sr.image.degradations import Degradation, jpeg_roundtrip
from yoda_sr.image.restoration import (
    JPEG_THRESHOLD,
    NOISE_THRESHOLD,
    clean,
    deblock,
    find_jpeg,
    is_jpeg,
    noise_sigma,
    quantization_table,
)

from conftest import cli, photo, save_tiny_checkpoint


def lr_photo(name: str) -> np.ndarray:
    """A real photo downscaled 4x, as the LR of an evaluation is (no JPEG, no noise left)."""
    return degrade(photo(name), 4)


def noisy(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    return Degradation(noise=sigma).apply(image, np.random.default_rng(seed))


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_a_clean_photo_is_neither_jpeg_nor_noisy_and_is_returned_untouched(name):
    lr = lr_photo(name)
    assert find_jpeg(lr)[1] < JPEG_THRESHOLD / 2
    assert noise_sigma(lr) < NOISE_THRESHOLD / 2
    image, done = clean(lr)
    assert image is lr and done.kind == "none"


@pytest.mark.parametrize("quality", [30, 60, 75, 90])
def test_the_jpeg_quality_is_found_from_the_pixels(quality):
    lr = jpeg_roundtrip(lr_photo("coffee"), quality)
    found, fit, significance, _ = find_jpeg(lr)
    assert found == quality and is_jpeg(fit, significance)


@pytest.mark.parametrize("crop", [(3, 5), (7, 1)])
def test_a_jpeg_cropped_off_its_block_grid_is_found_where_its_grid_now_starts(crop):
    top, left = crop
    cropped = jpeg_roundtrip(lr_photo("astronaut"), 50)[top:, left:]
    quality, fit, significance, origin = find_jpeg(cropped)
    assert quality == 50 and is_jpeg(fit, significance) and origin == ((8 - top) % 8, (8 - left) % 8)
    assert clean(cropped)[1].kind == "jpeg"
    assert not is_jpeg(*find_jpeg(lr_photo("astronaut")[top:, left:])[1:3])


@pytest.mark.parametrize("sigma", [3.0, 5.0, 10.0])
def test_the_noise_sigma_is_found_within_ten_percent_through_the_texture(sigma):
    for name in ("astronaut", "chelsea"):  # fur and a textured suit: the luma would mistake them for noise
        assert noise_sigma(noisy(lr_photo(name), sigma)) == pytest.approx(sigma, rel=0.1)


def test_deblocking_brings_a_jpeg_closer_to_the_original_and_stays_consistent_with_it():
    """The result is nearer the uncompressed LR than the JPEG was, and its luma still compresses to
    the same JPEG: every block DCT coefficient lies in the quantization cell the JPEG left."""
    from yoda_sr.image.restoration import _block_dct, _luma

    original = lr_photo("astronaut")
    compressed = jpeg_roundtrip(original, 40)
    image, done = clean(compressed)
    assert done.kind == "jpeg" and done.level == 40 and image.dtype == np.uint8
    assert (
        psnr(image.astype(float), original.astype(float)) > psnr(compressed.astype(float), original.astype(float)) + 0.3
    )

    table = quantization_table(40)
    restored = deblock(compressed.astype(np.float64), 40)
    cells = np.round(_block_dct(_luma(compressed.astype(np.float64))) / table)
    offset = _block_dct(_luma(restored)) / table - cells
    assert np.abs(offset).max() <= 0.5 + 1e-4
    assert np.abs(offset).mean() > 0.05  # it did move the coefficients


def test_denoising_removes_most_of_the_noise_and_says_how_much_it_found():
    original = lr_photo("chelsea")
    image, done = clean(noisy(original, 6.0))
    assert done.kind == "noise" and done.level == pytest.approx(6.0, rel=0.1)
    before = psnr(noisy(original, 6.0).astype(float), original.astype(float))
    assert psnr(image.astype(float), original.astype(float)) > before + 2
    assert done.describe() == f"noise sigma {done.level:.1f} removed"


def test_sixteen_bit_images_are_cleaned_at_full_precision():
    original = lr_photo("chelsea").astype(np.uint16) * 257
    rng = np.random.default_rng(1)
    degraded = np.clip(original + rng.normal(0, 6 * 257, original.shape), 0, 65535).astype(np.uint16)
    image, done = clean(degraded)
    assert image.dtype == np.uint16 and done.kind == "noise"
    assert len(np.unique(image[..., 0] % 257)) > 100  # not 8-bit values scaled back up


def test_off_and_small_images_pass_through_and_a_bad_mode_is_refused():
    jpeg = jpeg_roundtrip(lr_photo("coffee"), 50)
    assert clean(jpeg, "off")[0] is jpeg
    tiny = jpeg[:20, :20]  # under 16 whole blocks: no JPEG verdict; the noise estimate finds none
    assert find_jpeg(tiny) == (None, 0.0, 0.0, (0, 0)) and clean(tiny)[1].kind == "none"
    with pytest.raises(ValueError, match="auto or off"):
        clean(jpeg, "sometimes")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def test_upscale_cleans_the_input_before_the_model_sees_it(model_file):
    """With auto the model upscales the deblocked LR, exactly as if it had been given that; with off
    it upscales the JPEG as it is."""
    upscaler = Upscaler.from_pretrained(model_file, device="cpu")
    jpeg = jpeg_roundtrip(lr_photo("coffee")[:96, :128], 50)
    auto = upscaler.upscale(jpeg, seed=3, settings=Settings(steps=2))
    off = upscaler.upscale(jpeg, seed=3, settings=Settings(steps=2, clean="off"))
    given = upscaler.upscale(clean(jpeg)[0], seed=3, settings=Settings(steps=2, clean="off"))
    assert auto.cleaning.kind == "jpeg" and off.cleaning.kind == "none"
    assert np.array_equal(auto.image, given.image) and not np.array_equal(auto.image, off.image)
    with pytest.raises(SettingError, match="auto or off"):
        upscaler.resolve(Settings(clean="maybe"))


def test_the_cli_names_what_it_cleaned_and_refuses_a_bad_value_in_one_line(model_file, tmp_path, capsys):
    from PIL import Image

    source = tmp_path / "in" / "noisy.png"
    source.parent.mkdir()
    Image.fromarray(noisy(lr_photo("chelsea")[:64, :64], 8.0)).save(source)
    code = cli("upscale", source, "--model", model_file, "--steps", "2", "-o", tmp_path / "out.png", "--json")
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record["clean"] == "auto" and record["cleaned"].startswith("noise sigma")
    code = cli("upscale", source, "--model", model_file, "--clean", "later", "-o", tmp_path / "bad.png")
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--clean" in err and "auto or off" in err
    assert not (tmp_path / "bad.png").exists()


def test_greyscale_jpeg_is_found_but_greyscale_noise_is_left_alone():
    """One channel has no colour differences to tell noise from texture: only JPEG is judged."""
    grey = lr_photo("camera")
    rng = np.random.default_rng(0)
    grainy = np.clip(grey + rng.normal(0, 8, grey.shape[:2])[..., None], 0, 255).astype(np.uint8)
    assert clean(grainy)[1].kind == "none"
    assert clean(jpeg_roundtrip(grey, 50))[1].kind == "jpeg"


def test_the_attention_command_maps_the_cleaned_input_as_upscale_sees_it(tmp_path, capsys):
    """`attention` on a JPEG gives the map of its deblocked LR (blocks are edges to the edge map);
    --clean off gives the map of the JPEG as it is; a bad value is one line."""
    from PIL import Image

    source = tmp_path / "photo.png"
    jpeg = jpeg_roundtrip(lr_photo("coffee"), 30)
    Image.fromarray(jpeg).save(source)
    maps = {}
    for mode in ("auto", "off"):
        out = tmp_path / mode
        out.mkdir()
        assert (
            cli("attention", source, "--method", "edge", "--clean", mode, "--scale", "1", "--npy", "-o", out, "-q") == 0
        )
        maps[mode] = np.load(next(out.glob("*.npy")))
    from yoda_sr.attention import compute_attention
    from yoda_sr.image.imaging import to_tensor

    expected = compute_attention(to_tensor(clean(jpeg)[0]), "edge", hr_size=jpeg.shape[:2])[0, 0].numpy()
    assert np.allclose(maps["auto"], expected, atol=1e-6) and not np.allclose(maps["off"], expected, atol=1e-3)
    assert cli("attention", source, "--clean", "x", "-o", tmp_path / "auto") == 2
    assert "auto or off" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket"])
def test_small_crops_and_rounded_ramps_are_not_jpeg_but_their_jpegs_are(name):
    """Few blocks leave few coefficients, and a few can sit on a coarse lattice by chance (a 64 x 64
    clean crop once fitted q7 at 0.36): the fit must also be significant."""
    lr = lr_photo(name)
    top, left = lr.shape[0] // 2 - 32, lr.shape[1] // 2 - 32
    crop = np.ascontiguousarray(lr[top : top + 64, left : left + 64])
    rows, cols = np.mgrid[0:64, 0:64]
    ramp = np.round(np.stack([90 + 25 * cols / 64 + 15 * rows / 64] * 3, axis=-1)).astype(np.uint8)
    for image in (crop, np.concatenate([ramp[:, :32], crop[:, 32:]], axis=1)):
        assert not is_jpeg(*find_jpeg(image)[1:3]) and clean(image)[1].kind == "none"
    quality, fit, significance, _ = find_jpeg(jpeg_roundtrip(crop, 60))
    assert quality == 60 and is_jpeg(fit, significance)


def test_a_small_lr_is_too_small_to_judge_noisy():
    """On a 16 x 16 LR (an SR3 face input) the estimate rests on 196 values: clean face crops
    measured 2.2-2.5. Below MIN_NOISE_SIDE nothing is estimated or removed, so the model sees the
    input upstream gave it; from that side on, noise is found as before."""
    from yoda_sr.image.restoration import MIN_NOISE_SIDE

    grainy = noisy(lr_photo("astronaut"), 6.0)
    small = np.ascontiguousarray(grainy[:16, :16])
    assert MIN_NOISE_SIDE > 16
    assert noise_sigma(small) == 0.0
    cleaned, done = clean(small)
    assert cleaned is small and done.kind == "none"
    assert noise_sigma(grainy[:MIN_NOISE_SIDE, :MIN_NOISE_SIDE]) > NOISE_THRESHOLD


def _large(kind: str) -> np.ndarray:
    """A 300 x 420 crop of a photo as a JPEG cropped off its block grid, or noisy: several tiles when
    TILE is 64."""
    big = np.ascontiguousarray(photo("astronaut")[100:400, 50:470])
    return jpeg_roundtrip(big, 50)[3:, 5:] if kind == "jpeg" else noisy(big, 6.0)


@pytest.mark.parametrize("kind", ["jpeg", "noise"])
def test_cleaning_in_tiles_gives_the_whole_image_result(kind, monkeypatch):
    """Tiles on the block grid with a halo wider than non-local means reaches: the same pixels as
    cleaning the whole image at once (deblock/denoise on the full float image)."""
    import yoda_sr.image.restoration as restoration

    image = _large(kind)
    quality, _, _, origin = find_jpeg(image)
    levels = image.astype(np.float64)
    whole = deblock(levels, quality, origin) if kind == "jpeg" else restoration.denoise(levels, noise_sigma(image))
    expected = np.clip(np.rint(whole), 0, 255).astype(np.uint8)
    monkeypatch.setattr(restoration, "TILE", 64)
    tiled, done = clean(image)
    assert done.kind == kind
    assert restoration._cuts(image.shape[0], origin[0])[1][0] == origin[0] + 64  # it did work in tiles
    assert np.array_equal(tiled, expected)


def test_cleaning_a_large_image_holds_little_beyond_its_output(monkeypatch):
    """The estimates sample windows and the cleaning works in tiles: the Python-side peak (numpy's
    allocations) stays under twice the output, where one float64 copy of the image is 8 times it."""
    import tracemalloc

    import yoda_sr.image.restoration as restoration

    monkeypatch.setattr(restoration, "TILE", 64)
    monkeypatch.setattr(restoration, "SAMPLE_PIXELS", 128 * 128)
    monkeypatch.setattr(restoration, "_SAMPLE_SIDE", 64)
    image = np.tile(_large("noise"), (3, 3, 1))  # 900 x 1260
    tracemalloc.start()
    try:
        cleaned, done = clean(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert done.kind == "noise" and cleaned.shape == image.shape
    assert peak < 2 * image.nbytes, f"peak {peak / 2**20:.1f} MiB for a {image.nbytes / 2**20:.1f} MiB image"
