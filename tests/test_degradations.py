"""LR degradations (`evaluate --degrade`, `train --lr-noise/--lr-jpeg`): parsing, what each does to
an image, and the training draws."""

from __future__ import annotations

import numpy as np
import pytest

from yoda_sr.errors import SettingError
from yoda_sr.evaluation.metrics import psnr
from yoda_sr.image.degradations import JPEG_QUALITY_MAX, Degradation, jpeg_roundtrip, random_degradation

from conftest import photo


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("none", Degradation()),
        ("", Degradation()),
        ("noise:5", Degradation(noise=5.0)),
        ("JPEG:60", Degradation(jpeg=60)),
        ("noise:2.5, jpeg:30", Degradation(noise=2.5, jpeg=30)),
    ],
)
def test_parse_reads_what_label_writes(text, expected):
    parsed = Degradation.parse(text)
    assert parsed == expected
    assert Degradation.parse(parsed.label()) == parsed
    assert parsed.is_identity == (expected == Degradation())


@pytest.mark.parametrize("text", ["blur:3", "jpeg:0", "jpeg:101", "jpeg:abc", "noise:-1", "noise:60", "noise"])
def test_bad_degradations_are_a_setting_error_naming_the_part(text):
    with pytest.raises(SettingError) as raised:
        Degradation.parse(text)
    assert raised.value.setting == "degrade"
    assert text.split(":")[0] in str(raised.value)


def test_noise_has_the_asked_sigma_and_follows_the_generator():
    gray = np.full((128, 128, 3), 128, np.uint8)
    noisy = Degradation(noise=5).apply(gray, np.random.default_rng(0))
    assert noisy.dtype == np.uint8 and noisy.shape == gray.shape
    assert 4.8 < float(noisy.astype(np.float64).std()) < 5.2
    assert abs(float(noisy.mean()) - 128) < 0.1
    assert np.array_equal(noisy, Degradation(noise=5).apply(gray, np.random.default_rng(0)))
    assert not np.array_equal(noisy, Degradation(noise=5).apply(gray, np.random.default_rng(1)))
    assert np.array_equal(Degradation().apply(gray, np.random.default_rng(0)), gray)


def test_lower_jpeg_quality_loses_more():
    crop = np.ascontiguousarray(photo("astronaut")[100:228, 100:228])
    scores = [psnr(jpeg_roundtrip(crop, quality), crop) for quality in (95, 60, 20)]
    assert scores[0] > scores[1] + 2 > scores[2] + 4
    assert np.array_equal(Degradation(jpeg=60).apply(crop, np.random.default_rng(0)), jpeg_roundtrip(crop, 60))


def test_training_draws_degrade_half_the_samples_within_the_ranges():
    generator = np.random.default_rng(0)
    draws = [random_degradation(10.0, 40, generator) for _ in range(4000)]
    noises = np.array([draw.noise for draw in draws])
    qualities = np.array([draw.jpeg for draw in draws if draw.jpeg is not None])
    assert 0.46 < np.mean(noises > 0) < 0.54 and noises.max() <= 10 and noises.max() > 9.9
    assert 0.46 < len(qualities) / len(draws) < 0.54
    assert qualities.min() == 40 and qualities.max() == JPEG_QUALITY_MAX
    assert all(random_degradation(0.0, 0, generator).is_identity for _ in range(100))
