"""Flat areas keep the base (docs/method.md §4, "Flat areas"): ``masking.flat_areas`` and ``--flat-floor``.

An LR image whose left half is a smooth ramp rounded to 8 bits (nothing but rounding error for detail)
and whose right half is a photo: the floor finds the ramp and not the photo; the sampler, whole-image
and streamed, leaves the ramp's HR pixels exactly at the regression base even with l = 1 (every pixel
active), and diffuses the rest.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yoda_sr.api import Settings, Upscaler
from yoda_sr.diffusion.masking import activation_steps, flat_areas
from yoda_sr.errors import SettingError
from yoda_sr.evaluation.baselines import regression_base
from yoda_sr.image.imaging import to_tensor

from conftest import cli, photo, save_tiny_checkpoint

SCALE = 4


def half_flat(height: int = 32, width: int = 64) -> np.ndarray:
    """Left half: a diagonal ramp of 40 levels rounded to 8 bits; right half: a crop of a photo."""
    rows, cols = np.mgrid[0:height, 0 : width // 2]
    ramp = 90.0 + 25.0 * cols / (width // 2) + 15.0 * rows / height
    left = np.round(np.stack([ramp, ramp * 0.9, ramp * 1.1], axis=-1)).astype(np.uint8)
    right = photo("chelsea")[100 : 100 + height, 150 : 150 + width // 2]
    return np.ascontiguousarray(np.concatenate([left, right], axis=1))


def test_a_rounded_ramp_is_flat_and_a_photo_or_noise_is_not():
    image = half_flat()
    flat = flat_areas(to_tensor(image), 0.3)[0, 0].numpy()
    assert flat.shape == (32, 64)
    assert flat[:, :28].all()  # the ramp, away from the photo by more than the window
    assert flat[:, 36:].mean() < 0.02
    noisy = image.astype(np.float64) + np.random.default_rng(0).normal(0, 2.0, image.shape)
    noisy_flat = flat_areas(to_tensor(np.clip(np.round(noisy), 0, 255).astype(np.uint8)), 0.3)
    assert not noisy_flat.any()  # sigma 2 of noise is detail, not rounding
    assert not flat_areas(to_tensor(image), 0.0).any()
    hr = flat_areas(to_tensor(image), 0.3, scale=SCALE)[0, 0].numpy()
    assert hr.shape == (128, 256) and np.array_equal(hr, np.kron(flat, np.ones((SCALE, SCALE), dtype=bool)))


def test_a_floor_out_of_range_is_refused():
    with pytest.raises(ValueError, match="flat-area floor"):
        flat_areas(to_tensor(half_flat()), -0.1)


def test_flat_pixels_get_activation_step_zero_whatever_a_and_l():
    attention = torch.full((1, 1, 2, 2), 0.5)
    flat = torch.tensor([[[[True, False], [False, True]]]])
    assert activation_steps(attention, 1.0, 100, flat).tolist() == [[[[0, 100], [100, 0]]]]
    assert activation_steps(attention, 0.2, 100).tolist() == [[[[70, 70], [70, 70]]]]


@pytest.fixture(scope="module")
def upscaler(tmp_path_factory) -> Upscaler:
    model = save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")
    return Upscaler.from_pretrained(model, device="cpu")


@pytest.mark.parametrize("stream", ["off", "on"])
def test_flat_areas_keep_the_base_and_the_rest_is_diffused(upscaler, stream):
    image = half_flat()
    base = regression_base(upscaler, image, SCALE).astype(np.int16)
    flat = np.kron(flat_areas(to_tensor(image), 0.3)[0, 0].numpy(), np.ones((SCALE, SCALE), dtype=bool))
    tiles = {"tile": 64, "tile_overlap": 16} if stream == "on" else {"tile": 0}

    def run(floor: float):
        settings = Settings(steps=4, attention="gaussian", lower_bound=1.0, flat_floor=floor, stream=stream, **tiles)
        return upscaler.upscale(image, seed=1, settings=settings)

    kept, everywhere = run(0.3), run(0.0)
    assert kept.streamed == (stream == "on") and kept.flat_floor == 0.3
    difference = np.abs(kept.image.astype(np.int16) - base).max(axis=2)
    assert difference[flat].max() == 0  # the flat areas are the base, to the last bit
    assert difference[~flat].mean() > 2  # the rest was diffused
    assert np.abs(everywhere.image.astype(np.int16) - base).max(axis=2)[flat].mean() > 2  # floor 0: diffused
    assert everywhere.update_fraction == pytest.approx(1.0)
    assert kept.update_fraction == pytest.approx(1.0 - flat.mean(), abs=1e-9)


def test_the_model_default_applies_and_a_bad_floor_is_one_line(upscaler, tmp_path, capsys):
    assert upscaler.resolve(Settings()).flat_floor == 0.0  # the tiny model's metadata has none
    with pytest.raises(SettingError, match="flat-area floor"):
        upscaler.resolve(Settings(flat_floor=300.0))
    from PIL import Image

    source = tmp_path / "in.png"
    Image.fromarray(half_flat()).save(source)
    assert cli("upscale", str(source), "--flat-floor", "-1", "-o", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "flat" in err[0]
    assert not (tmp_path / "out").exists()


def test_the_attention_command_shows_flat_areas_as_never_active(tmp_path, capsys):
    from PIL import Image

    image = half_flat()
    source = tmp_path / "in.png"
    Image.fromarray(image).save(source)
    flat_share = float(flat_areas(to_tensor(image), 0.3).float().mean())
    fractions = {}
    for floor in ("0", "0.3"):
        out = tmp_path / f"map-{floor}.png"
        arguments = ["--method", "gaussian", "--lower-bound", "1", "--scale", "1", "--timeline", "3"]
        assert cli("attention", source, *arguments, "--flat-floor", floor, "-o", out) == 0
        line = capsys.readouterr().out.strip().splitlines()[-1]
        fractions[floor] = float(line.split("pixel-update fraction ")[1].split()[0])
        assert out.is_file() and out.with_name(f"map-{floor}.timeline.png").is_file()
    assert fractions["0"] == 1.0
    assert 0.3 < flat_share < 0.6 and fractions["0.3"] == pytest.approx(1.0 - flat_share, abs=1e-3)


def test_the_upscale_record_names_the_floor(tmp_path, capsys):
    import json

    from PIL import Image

    source = tmp_path / "in.png"
    Image.fromarray(half_flat()).save(source)
    model = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    common = ("upscale", source, "--model", model, "--steps", "2", "--attention", "gaussian", "--json")
    records = {}
    for floor in ("0", "0.3"):
        assert cli(*common, "--flat-floor", floor, "-o", tmp_path / f"out-{floor}") == 0
        records[floor] = json.loads(capsys.readouterr().out.strip())
    assert records["0"]["flat_floor"] == 0.0 and records["0.3"]["flat_floor"] == 0.3
    assert records["0.3"]["update_fraction"] < records["0"]["update_fraction"]
