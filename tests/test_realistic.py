"""Realistic training LR (`yoda_sr.image.realistic`, `train --lr-degradation realistic`): shapes,
reproducibility, alignment with the bicubic LR, what each stage does, refused ranges, a short run."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from yoda_sr.errors import SettingError
from yoda_sr.image.imaging import bicubic_degrade, to_array, to_tensor
from yoda_sr.image.realistic import NO_ROUND, RealisticDegradation, RoundRanges, gaussian_kernel
from yoda_sr.image.restoration import find_jpeg, is_jpeg, noise_sigma
from yoda_sr.seeds import derive_seed
from yoda_sr.training import data, load_config

from conftest import cli, photo

OFF = RealisticDegradation.off()


def smooth(height: int = 256, width: int = 256) -> np.ndarray:
    """A smooth synthetic RGB image (no texture, no noise, no saturation)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = [128 + 60 * np.sin(x / 17), 128 + 60 * np.cos(y / 13), 128 + 40 * np.sin((x + y) / 23)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def only(**first: object) -> RealisticDegradation:
    """Every stage off but the first round's ``first`` settings."""
    return replace(OFF, first=replace(NO_ROUND, **first))


def high_frequency(image: np.ndarray) -> float:
    levels = image.astype(np.float64)
    laplacian = 4 * levels[1:-1, 1:-1] - levels[:-2, 1:-1] - levels[2:, 1:-1] - levels[1:-1, :-2] - levels[1:-1, 2:]
    return float(np.mean(laplacian**2))


CROP = np.ascontiguousarray(photo("astronaut")[100:228, 100:228])


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("size", [(128, 128), (67, 61), (9, 13)])
def test_the_lr_has_the_exact_size_and_dtype(scale, size):
    hr = np.ascontiguousarray(photo("astronaut")[: size[0], : size[1]])
    for index in range(6):
        lr = RealisticDegradation().apply(hr, scale, np.random.default_rng(index))
        assert lr.dtype == np.uint8 and lr.shape == (size[0] // scale, size[1] // scale, 3)


def test_the_lr_is_a_function_of_the_seed():
    def draw(index: int) -> bytes:
        generator = np.random.default_rng(derive_seed(3, index, "degrade"))
        return RealisticDegradation().apply(CROP, 4, generator).tobytes()

    assert draw(5) == draw(5)
    assert len({draw(index) for index in range(8)}) == 8


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_with_every_stage_off_it_is_the_bicubic_lr(scale):
    hr = smooth(67, 61)
    lr = OFF.apply(hr, scale, np.random.default_rng(0))
    _, bicubic = bicubic_degrade(to_tensor(hr), scale)
    assert lr.shape == to_array(bicubic).shape
    assert int(np.abs(lr.astype(int) - to_array(bicubic).astype(int)).max()) <= 1


def test_blur_lowers_high_frequencies():
    hr = np.ascontiguousarray(photo("astronaut")[100:356, 100:356])
    clean = OFF.apply(hr, 2, np.random.default_rng(0))
    for kind in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
        blurred = only(blur=1.0, kernel_kinds=kind, sigma=(1.5, 2.0)).apply(hr, 2, np.random.default_rng(0))
        assert high_frequency(blurred) < 0.7 * high_frequency(clean), kind


def test_kernels_are_centred_normalised_and_shaped():
    gaussian = gaussian_kernel(21, 2.0, 2.0)
    assert gaussian.shape == (21, 21) and abs(float(gaussian.sum()) - 1) < 1e-5
    assert np.allclose(gaussian, gaussian[::-1, ::-1]) and np.unravel_index(gaussian.argmax(), (21, 21)) == (10, 10)
    stretched = gaussian_kernel(21, 3.0, 1.0, angle=0.0)
    assert stretched[10, 14] > stretched[14, 10]  # longer along x
    heavy, flat = gaussian_kernel(21, 2.0, 2.0, beta=0.7), gaussian_kernel(21, 2.0, 2.0, beta=4.0)
    assert heavy[10, 0] > gaussian[10, 0] > flat[10, 0]


def test_resizing_between_rounds_changes_the_lr_but_keeps_it_aligned():
    hr = smooth()
    clean = OFF.apply(hr, 4, np.random.default_rng(0))
    down = only(resize=(0, 1, 0), scale=(0.5, 1.0), interpolations=("area",)).apply(hr, 4, np.random.default_rng(0))
    difference = np.abs(down.astype(int) - clean.astype(int))
    assert difference.max() >= 1 and difference.mean() < 2  # resampled, not shifted


@pytest.mark.parametrize("gaussian", [1.0, 0.0])
def test_noise_raises_the_noise_estimate(gaussian):
    hr = smooth()
    clean = OFF.apply(hr, 2, np.random.default_rng(0))
    noisy = only(noise=1.0, gaussian=gaussian, grey=0.0, noise_sigma=(10, 10), poisson_sigma=(10, 10))
    lr = noisy.apply(hr, 2, np.random.default_rng(0))
    assert noise_sigma(lr) > noise_sigma(clean) + 2


def test_grey_noise_is_the_same_in_every_channel():
    hr = smooth()
    clean = OFF.apply(hr, 2, np.random.default_rng(0)).astype(np.float64)
    grey = only(noise=1.0, gaussian=1.0, grey=1.0, noise_sigma=(10, 10)).apply(hr, 2, np.random.default_rng(0))
    noise = grey.astype(np.float64) - clean
    assert noise[..., 0].std() > 2 and np.corrcoef(noise[..., 0].ravel(), noise[..., 2].ravel())[0, 1] > 0.9


def test_a_last_jpeg_is_found():
    hr = np.ascontiguousarray(photo("astronaut")[:256, :256])
    jpeg = replace(OFF, final_jpeg=1.0, final_quality=(40, 40)).apply(hr, 2, np.random.default_rng(0))
    quality, fit, significance, _ = find_jpeg(jpeg)
    assert is_jpeg(fit, significance) and quality is not None and abs(quality - 40) <= 10
    assert not is_jpeg(*find_jpeg(OFF.apply(hr, 2, np.random.default_rng(0)))[1:3])


def test_the_default_draws_degrade_and_vary():
    clean = OFF.apply(CROP, 4, np.random.default_rng(0)).astype(int)
    draws = [RealisticDegradation().apply(CROP, 4, np.random.default_rng(index)).astype(int) for index in range(8)]
    assert all(np.abs(draw - clean).mean() > 1 for draw in draws)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: RoundRanges(sigma=(3.0, 1.0)), "sigma"),
        (lambda: RoundRanges(kernel_size=(8, 21)), "kernel_size"),
        (lambda: RoundRanges(kernel_size=(7, 99)), "kernel_size"),
        (lambda: RoundRanges(blur=1.5), "blur"),
        (lambda: RoundRanges(scale=(1.2, 1.5)), "scale"),
        (lambda: RoundRanges(kernel_kinds=(0, 0, 0)), "kernel_kinds"),
        (lambda: RoundRanges(interpolations=("nearest",)), "interpolations"),
        (lambda: RoundRanges(quality=(30.5, 90)), "quality"),
        (lambda: RoundRanges(noise_sigma=(-1.0, 5.0)), "noise_sigma"),
        (lambda: RealisticDegradation(final_quality=(0, 95)), "final_quality"),
        (lambda: RealisticDegradation(second_round=-0.1), "second_round"),
    ],
)
def test_bad_ranges_are_one_line_naming_the_field(make, name):
    with pytest.raises(SettingError) as raised:
        make()
    assert raised.value.setting == name and "\n" not in str(raised.value)


def test_bad_images_are_refused():
    with pytest.raises(ValueError, match="smaller than the scale"):
        OFF.apply(np.zeros((3, 8, 3), np.uint8), 4, np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8"):
        OFF.apply(np.zeros((8, 8, 3), np.float32), 2, np.random.default_rng(0))


@pytest.fixture
def photos(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("YODA_SR_HOME", str(tmp_path / "home"))
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut", "coffee"):
        Image.fromarray(photo(name)).save(folder / f"{name}.png")
    return folder


def test_training_crops_get_the_realistic_lr_of_their_own_index(photos):
    config = load_config(None, dict(data=str(photos), model="srdiff-tiny", hr_size=32, attention="none", seed=3))
    samples = data.Samples(data.load_sources(photos, config, 4, log=lambda _: None), config, 4)
    items = [samples[index] for index in range(6)]
    realistic = data.Collate(4, seed=3, lr_degradation="realistic")
    batch = realistic(items)
    assert batch["lr"].shape == (6, 3, 8, 8) and batch["hr"].shape == (6, 3, 32, 32)
    levels = (batch["lr"] + 1) * 127.5
    torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)
    assert torch.equal(realistic(items[4:5])["lr"][0], batch["lr"][4])
    generator = np.random.default_rng(derive_seed(3, 4, "degrade"))
    expected = RealisticDegradation().apply(to_array(items[4]["hr"]), 4, generator)
    assert np.array_equal(to_array(batch["lr"][4]), expected)


def test_realistic_settings_are_checked(photos):
    base = dict(data=str(photos), model="srdiff-tiny")
    with pytest.raises(SettingError) as raised:
        load_config(None, {**base, "lr_degradation": "real-esrgan"})
    assert raised.value.setting == "lr_degradation" and "bicubic or realistic" in str(raised.value)
    with pytest.raises(SettingError) as raised:
        load_config(None, {**base, "lr_degradation": "realistic", "lr_noise": 5.0})
    assert raised.value.setting == "lr_degradation" and "lr_noise" in str(raised.value)
    assert load_config(None, base).lr_degradation == "bicubic"


def test_a_short_realistic_run_completes_and_records_the_setting(photos, tmp_path, capsys):
    from yoda_sr import checkpoints

    out = tmp_path / "run"
    flags = ["--model", "srdiff-tiny", "--hr-size", "32", "--warmup", "1", "--attention", "edge"]
    extra = ["--iterations", "3", "--batch-size", "2", "--val-every", "3", "--val-images", "1", "--val-steps", "2"]
    code = cli("train", "--data", photos, "--out", out, *flags, *extra, "--lr-degradation", "realistic")
    err = capsys.readouterr().err
    assert code == 0, err
    assert 'lr_degradation = "realistic"' in (out / "config.toml").read_text()
    metadata = checkpoints.read_metadata(out / "weights" / "ema.safetensors")
    assert metadata["training"]["lr_degradation"] == "realistic"
    # a resume that asks for the other LR is refused: it would not be the same run
    code = cli("train", "--out", out, "--resume", "--iterations", "4", "--lr-degradation", "bicubic")
    err = capsys.readouterr().err
    assert code == 2 and "lr-degradation" in err and len(err.strip().splitlines()) == 1
