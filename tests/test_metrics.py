"""PSNR and SSIM agree with scikit-image's reference implementations on real photos; LPIPS says what installs it."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from yoda_sr.checkpoints import NotInstalledError
from yoda_sr.evaluation.metrics import (
    Lpips,
    crop_border,
    image_metrics,
    load_lpips_models,
    lpips_available,
    lpips_missing_note,
    psnr,
    ssim,
    y_channel,
)
from yoda_sr.image.imaging import bicubic_degrade, resize_bicubic, rgb_to_y, to_array, to_tensor

from conftest import photo

TOLERANCE = 1e-4


def reference_ssim(a: np.ndarray, b: np.ndarray, **kwargs) -> float:
    return structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, **kwargs
    )


def bicubic_round_trip(hr: np.ndarray, scale: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(HR cropped to a multiple of scale, its 8-bit LR enlarged again with bicubic)."""
    cropped, lr = bicubic_degrade(to_tensor(hr), scale)
    lr8 = to_tensor(to_array(lr))
    return to_array(cropped), to_array(resize_bicubic(lr8, size=tuple(cropped.shape[-2:])))


def jpeg(image: np.ndarray, quality: int = 30) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def noisy(image: np.ndarray, sigma: float = 8.0) -> np.ndarray:
    noise = np.random.default_rng(0).normal(0.0, sigma, image.shape)
    return np.clip(np.round(image + noise), 0, 255).astype(np.uint8)


def distorted_pairs(name: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, distorted, reference) uint8 pairs of one photo."""
    image = photo(name)
    hr, upscaled = bicubic_round_trip(image)
    return [("bicubic x4", upscaled, hr), ("noise", noisy(image), image), ("jpeg", jpeg(image), image)]


def test_psnr_is_the_closed_form_and_ssim_falls_with_distortion():
    image = photo("coffee").astype(np.float64)
    for difference in (1.0, 5.0, 40.0):
        assert psnr(image + difference, image) == pytest.approx(20 * math.log10(255 / difference), abs=1e-9)
    y = y_channel(photo("coffee"))
    scores = [ssim(y_channel(noisy(photo("coffee"), sigma)), y) for sigma in (2.0, 8.0, 32.0)]
    assert 1.0 > scores[0] > scores[1] > scores[2] > 0.0


@pytest.mark.parametrize("name", ["astronaut", "chelsea"])
def test_image_metrics_match_scikit_image_on_y_and_rgb(name):
    hr, upscaled = bicubic_round_trip(photo(name))
    scores = image_metrics(upscaled, hr, 4)
    sr_y, hr_y = y_channel(upscaled)[4:-4, 4:-4], y_channel(hr)[4:-4, 4:-4]
    sr_rgb, hr_rgb = upscaled[4:-4, 4:-4].astype(np.float64), hr[4:-4, 4:-4].astype(np.float64)
    assert set(scores) == {"psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"}
    assert abs(scores["psnr_y"] - peak_signal_noise_ratio(hr_y, sr_y, data_range=255)) < TOLERANCE
    assert abs(scores["ssim_y"] - reference_ssim(sr_y, hr_y)) < TOLERANCE
    assert abs(scores["psnr_rgb"] - peak_signal_noise_ratio(hr_rgb, sr_rgb, data_range=255)) < TOLERANCE
    assert abs(scores["ssim_rgb"] - reference_ssim(sr_rgb, hr_rgb, channel_axis=2)) < TOLERANCE
    # the luma of a bicubic x4 result is the usual few dB better than its RGB
    assert scores["psnr_y"] > scores["psnr_rgb"]


def test_data_range_is_honoured():
    image = y_channel(photo("coffee"))
    other = y_channel(noisy(photo("coffee")))
    assert psnr(other / 255.0, image / 255.0, data_range=1.0) == pytest.approx(psnr(other, image), abs=1e-9)
    assert ssim(other / 255.0, image / 255.0, data_range=1.0) == pytest.approx(ssim(other, image), abs=1e-9)


def test_y_channel_is_bt601_on_16_to_235_and_agrees_with_imaging():
    image = photo("rocket")
    expected = rgb_to_y(to_tensor(image).double().add(1).div(2))[0, 0].numpy()
    assert y_channel(image).dtype == np.float64
    np.testing.assert_allclose(y_channel(image), expected, atol=1e-12)
    corners = np.array([[[0, 0, 0], [255, 255, 255]], [[255, 0, 0], [0, 0, 255]]], dtype=np.uint8)
    np.testing.assert_allclose(y_channel(corners), [[16.0, 235.0], [16.0 + 65.481, 16.0 + 24.966]], atol=1e-9)
    np.testing.assert_allclose(y_channel(corners.astype(np.uint16) * 257), y_channel(corners), atol=1e-9)
    np.testing.assert_allclose(y_channel(corners / 255.0), y_channel(corners), atol=1e-9)


def test_identical_images_and_edge_cases():
    image = photo("chelsea")
    assert psnr(image, image) == math.inf
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    scores = image_metrics(image, image.copy(), 4)
    assert scores["psnr_y"] == math.inf and scores["psnr_rgb"] == math.inf
    assert scores["ssim_y"] == pytest.approx(1.0) and scores["ssim_rgb"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(image, image[:-1])
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(image, image[:, :-1])
    with pytest.raises(ValueError, match="differ in shape"):
        image_metrics(image, image[:-4], 4)
    with pytest.raises(ValueError, match="at least 11"):
        ssim(image[:10, :10], image[:10, :10])
    with pytest.raises(TypeError):
        image_metrics(image.astype(np.float64), image.astype(np.float64), 4)


def test_crop_border():
    x = np.arange(6 * 7).reshape(6, 7)
    np.testing.assert_array_equal(crop_border(x, 0), x)
    np.testing.assert_array_equal(crop_border(x, 2), x[2:4, 2:5])
    np.testing.assert_array_equal(crop_border(np.dstack([x, x]), 1), np.dstack([x, x])[1:5, 1:6])
    with pytest.raises(ValueError):
        crop_border(x, 3)
    with pytest.raises(ValueError):
        crop_border(x, -1)


def test_lpips_without_its_weights_says_which_command_installs_them(tmp_path, monkeypatch):
    monkeypatch.setenv("YODA_SR_HOME", str(tmp_path))
    assert not lpips_available("vgg") and not lpips_available("alex")
    assert lpips_missing_note(["vgg", "alex"]) == (
        "LPIPS not computed: its weights are not installed; run `yoda-sr checkpoints download lpips-vgg lpips-alex`"
    )
    assert lpips_missing_note(["alex"]).startswith("LPIPS-Alex not computed: ")
    with pytest.raises(NotInstalledError, match=r"run `yoda-sr checkpoints download lpips-vgg`"):
        Lpips("vgg", torch.device("cpu"))
    with pytest.raises(ValueError, match="vgg, alex"):
        Lpips("squeeze")
    assert load_lpips_models("cpu") == ({}, lpips_missing_note(["vgg", "alex"]))


def test_image_metrics_of_crops_smaller_than_the_ssim_window_give_nan_ssim():
    hr = photo("astronaut")[100:116, 100:116]
    noisy_hr = noisy(hr)
    scores = image_metrics(noisy_hr, hr, 4)  # 8 x 8 after the border crop: no 11 x 11 window fits
    assert math.isfinite(scores["psnr_y"]) and math.isnan(scores["ssim_y"]) and math.isnan(scores["ssim_rgb"])
