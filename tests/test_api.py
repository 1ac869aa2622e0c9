"""The library façade samples through `sampling.sample`: one path from the CLI to the maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yoda_sr.api import Settings, Upscaler
from yoda_sr.attention import compute_attention
from yoda_sr.errors import SettingError
from yoda_sr.image.imaging import resize_bicubic, to_array, to_tensor
from yoda_sr.runtime.sampler import sample

from conftest import photo, save_tiny_checkpoint


@pytest.fixture(scope="module")
def upscaler(tmp_path_factory) -> Upscaler:
    path = save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")
    return Upscaler.from_pretrained(path, device="cpu")


@pytest.mark.parametrize("attention,sampler,block", [("edge", "ddpm", 0), ("edge", "ddpm", 32), ("none", "ddim", 0)])
def test_upscaler_output_is_sampling_sample_output_for_the_same_seed(upscaler, attention, sampler, block):
    lr_image = photo("astronaut")[200:232, 180:228]
    settings = Settings(steps=6, sampler=sampler, attention=attention, lower_bound=0.2, sparse=False, block=block)
    result = upscaler.upscale(lr_image, seed=11, settings=settings)

    model = upscaler.model
    lr = to_tensor(lr_image)
    x_up = resize_bicubic(lr, size=(lr.shape[-2] * 4, lr.shape[-1] * 4))
    with torch.inference_mode():
        cond = model.prepare(lr, x_up)
    maps = None if attention == "none" else compute_attention(lr, attention, hr_size=tuple(x_up.shape[-2:]))
    schedule = upscaler.schedule_spec.build().respace(6)
    direct = sample(
        model,
        cond,
        schedule,
        sampler=sampler,
        attention=maps,
        lower_bound=0.2,
        block=block,
        generator=torch.Generator().manual_seed(11),
    )
    np.testing.assert_array_equal(result.image, to_array(direct.image))
    assert result.update_fraction == direct.update_fraction
    assert (result.update_fraction < 1.0) == (attention != "none")


@pytest.mark.parametrize(
    "settings,setting",
    [
        (Settings(steps=0), "steps"),
        (Settings(steps=10**6), "steps"),
        (Settings(sampler="euler"), "sampler"),
        (Settings(eta=-1.0), "eta"),
        (Settings(eta=float("nan")), "eta"),
        (Settings(lower_bound=1.5), "lower_bound"),
        (Settings(attention="nope"), "attention"),
        (Settings(tile_overlap=-1), "tile_overlap"),
    ],
)
def test_settings_are_refused_in_the_librarys_own_words(upscaler, settings, setting):
    with pytest.raises(SettingError) as caught:
        upscaler.resolve(settings)
    assert caught.value.setting == setting
    assert "--" not in str(caught.value)


def test_zero_steps_is_refused_not_taken_as_the_default(upscaler):
    assert upscaler.resolve(Settings()).steps == upscaler.defaults.steps
    with pytest.raises(SettingError, match="got 0"):
        upscaler.resolve(Settings(steps=0))


@pytest.mark.parametrize(
    "tile,overlap,setting",
    [
        (1, 0, "tile"),
        ("just below two size multiples", 0, "tile"),
        (64, 63, "tile_overlap"),
        ("auto", 10_000, "tile_overlap"),
        (0, -1, "tile_overlap"),
    ],
)
def test_tile_settings_are_checked_before_any_image(upscaler, tile, overlap, setting):
    if tile == "just below two size multiples":
        tile = 2 * upscaler.model.info.size_multiple - 1
    with pytest.raises(SettingError) as caught:
        upscaler.resolve(Settings(tile=tile, tile_overlap=overlap))
    assert caught.value.setting == setting


def test_tiny_images_need_no_tiles_whatever_the_overlap(upscaler):
    tiny = photo("astronaut")[100:104, 100:104]
    result = upscaler.upscale(tiny, settings=Settings(steps=2, tile_overlap=256))
    assert result.image.shape == (16, 16, 3) and result.tile is None


def test_the_facade_is_exported_from_the_package_lazily():
    import subprocess
    import sys

    probe = "import sys, yoda_sr; assert 'torch' not in sys.modules; from yoda_sr import Upscaler, Settings, Result"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_pil_rgba_and_grey_inputs_keep_their_layout(upscaler):
    from PIL import Image

    rgb = photo("astronaut")[200:224, 180:212]
    settings = Settings(steps=2)
    alpha = np.tile(np.linspace(0, 255, rgb.shape[1]).astype(np.uint8), (rgb.shape[0], 1))
    plain = upscaler.upscale(rgb, seed=1, settings=settings).image

    rgba = upscaler.upscale(np.dstack([rgb, alpha]), seed=1, settings=settings).image
    assert rgba.shape == (96, 128, 4)
    np.testing.assert_array_equal(rgba[..., :3], plain)  # alpha does not change the colour
    assert rgba[:, 0, 3].mean() < 20 and rgba[:, -1, 3].mean() > 235  # the ramp survives

    from_pil = upscaler.upscale(Image.fromarray(rgb), seed=1, settings=settings)
    np.testing.assert_array_equal(from_pil.image, plain)
    assert from_pil.to_pil().size == (128, 96)

    grey = upscaler.upscale(rgb[..., 1], seed=1, settings=settings).image
    assert grey.shape == (96, 128) and grey.dtype == np.uint8
    with pytest.raises(TypeError, match="PIL image or a numpy array"):
        upscaler.upscale([[1, 2], [3, 4]])  # type: ignore[arg-type]
