"""Bicubic resampling against Pillow on real photos, pixel conversions, Y channel, degradation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data

from yoda_sr.image.imaging import bicubic_degrade, resize_bicubic, rgb_to_y, to_array, to_tensor, upscale_bicubic

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
SIZE_CHANGES = ("4x down", "2x down", "3x down", "4x up", "2x up", "to 300x217")


def photo(name: str) -> np.ndarray:
    """A scikit-image photo (H x W x 3 uint8), cropped so that 2, 3 and 4 divide its sides."""
    image = getattr(data, name)()
    height, width = image.shape[0] // 12 * 12, image.shape[1] // 12 * 12
    return np.ascontiguousarray(image[:height, :width])


def target_size(image: np.ndarray, change: str) -> tuple[int, int]:
    """Output (height, width) of a named size change."""
    height, width = image.shape[:2]
    if change == "to 300x217":
        return 300, 217
    factor, direction = int(change[0]), change.split()[1]
    if direction == "down":
        return height // factor, width // factor
    return height * factor, width * factor


def grey_levels(image: np.ndarray) -> torch.Tensor:
    """H x W x C uint8 -> 1 x C x H x W float32 on the 0..255 scale."""
    return torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """1 x C x H x W on the 0..255 scale -> H x W x C uint8, rounded half up and clipped (as Pillow)."""
    return (x[0].permute(1, 2, 0) + 0.5).floor().clamp(0, 255).to(torch.uint8).numpy()


def pil_float_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pillow's BICUBIC on each channel as a 32-bit float image (no 8-bit rounding in between)."""
    channels = [
        Image.fromarray(image[..., c].astype(np.float32), mode="F").resize(size[::-1], Image.Resampling.BICUBIC)
        for c in range(image.shape[2])
    ]
    return np.stack([np.asarray(channel) for channel in channels], axis=-1)


@pytest.mark.parametrize("change", SIZE_CHANGES)
@pytest.mark.parametrize("name", PHOTOS)
def test_matches_pillow_float_bicubic(name: str, change: str) -> None:
    image = photo(name)
    size = target_size(image, change)
    ours = resize_bicubic(grey_levels(image), size=size, value_range=None)[0].permute(1, 2, 0).numpy()
    reference = pil_float_resize(image, size)
    assert ours.shape == reference.shape
    difference = np.abs(ours - reference)
    assert difference.max() < 1e-3
    assert difference.mean() < 1e-5


@pytest.mark.parametrize("change", SIZE_CHANGES)
@pytest.mark.parametrize("name", PHOTOS[:3])
def test_matches_pillow_uint8_bicubic_with_its_rounding(name: str, change: str) -> None:
    """Pillow's 8-bit path rounds and clips between its width and height passes; doing the same
    with two single-axis resizes reproduces ``Image.resize(..., BICUBIC)`` on RGB. Only exact .5
    ties, which Pillow's 22-bit fixed-point weights push either way, differ (two in a row: 2)."""
    image = photo(name)
    height, width = target_size(image, change)
    reference = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))
    width_pass = to_uint8(resize_bicubic(grey_levels(image), size=(image.shape[0], width), value_range=None))
    ours = to_uint8(resize_bicubic(grey_levels(width_pass), size=(height, width), value_range=None))
    difference = np.abs(ours.astype(np.int16) - reference.astype(np.int16))
    assert difference.max() <= 2
    assert np.count_nonzero(difference) < 1e-3 * difference.size


@pytest.mark.parametrize("change", SIZE_CHANGES)
@pytest.mark.parametrize("name", PHOTOS)
def test_model_tensors_match_pillow_uint8_within_one_grey_level(name: str, change: str) -> None:
    """The project's own path (uint8 -> [-1, 1] tensor -> resize -> uint8) against Pillow's 8-bit
    BICUBIC: clipping between passes, as Pillow does, keeps every pixel within one grey level."""
    image = photo(name)
    height, width = target_size(image, change)
    reference = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))
    ours = to_array(resize_bicubic(to_tensor(image), size=(height, width)))
    difference = np.abs(ours.astype(np.int16) - reference.astype(np.int16))
    assert difference.max() <= 1
    assert difference.mean() < 0.3


def test_clipping_between_passes_is_what_bounds_the_difference() -> None:
    """Without the clip, saturated edges overshoot and differ from Pillow by several grey levels."""
    image = photo("coffee")
    height, width = target_size(image, "4x up")
    reference = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))
    unclipped = to_array(resize_bicubic(to_tensor(image), size=(height, width), value_range=None))
    assert np.abs(unclipped.astype(np.int16) - reference.astype(np.int16)).max() > 1


def test_is_not_pytorch_bicubic() -> None:
    """PyTorch's default bicubic (a = -0.75, no antialiasing) must not come back."""
    image = grey_levels(photo("astronaut"))
    height, width = image.shape[-2:]
    for size in ((height * 2, width * 2), (height // 4, width // 4)):
        ours = to_uint8(resize_bicubic(image, size=size, value_range=None)).astype(np.int16)
        pytorch = to_uint8(F.interpolate(image, size=size, mode="bicubic", align_corners=False))
        assert np.abs(ours - pytorch.astype(np.int16)).max() > 1


def test_batch_equals_single_images_bit_exact() -> None:
    crops = [grey_levels(photo(name))[..., :192, :240] / 127.5 - 1 for name in PHOTOS[:3]]
    batch = torch.cat(crops)
    for size in ((48, 60), (96, 120), (576, 720), (101, 333)):
        resized = resize_bicubic(batch, size=size)
        for index, crop in enumerate(crops):
            assert torch.equal(resized[index : index + 1], resize_bicubic(crop, size=size))


def test_channels_first_without_batch() -> None:
    image = grey_levels(photo("chelsea"))
    batched = resize_bicubic(image, size=(77, 130), value_range=None)
    assert torch.equal(resize_bicubic(image[0], size=(77, 130), value_range=None), batched[0])


def test_dtypes_are_kept_and_agree() -> None:
    crop = np.ascontiguousarray(photo("coffee")[:120, :180])
    double = resize_bicubic(grey_levels(crop).double(), size=(240, 90), value_range=None)
    assert double.dtype == torch.float64
    reference = torch.from_numpy(pil_float_resize(crop, (240, 90))).permute(2, 0, 1)[None].double()
    assert (double - reference).abs().max() < 1e-3
    single = resize_bicubic(grey_levels(crop) / 127.5 - 1, size=(240, 90), value_range=None)
    assert (double / 127.5 - 1 - single).abs().max() < 1e-5
    for dtype in (torch.float16, torch.bfloat16):
        low = resize_bicubic((grey_levels(crop) / 127.5 - 1).to(dtype), size=(240, 90))
        assert low.dtype == dtype
        assert (low.float() - single).abs().max() < 0.02


def test_scale_and_size_agree_and_antialias_matters() -> None:
    image = grey_levels(photo("rocket"))[..., :200, :300]
    assert torch.equal(
        resize_bicubic(image, scale=0.5, value_range=None), resize_bicubic(image, size=(100, 150), value_range=None)
    )
    assert torch.equal(
        resize_bicubic(image, scale=3, value_range=None), resize_bicubic(image, size=(600, 900), value_range=None)
    )
    assert resize_bicubic(image, scale=1 / 3, value_range=None).shape[-2:] == (67, 100)
    upscaled = resize_bicubic(image, scale=2, value_range=None)
    assert torch.equal(resize_bicubic(image, scale=2, antialias=False, value_range=None), upscaled)
    aliased = resize_bicubic(image, scale=0.25, antialias=False, value_range=None)
    assert (aliased - resize_bicubic(image, scale=0.25, value_range=None)).abs().max() > 1


def test_same_size_returns_a_copy() -> None:
    image = torch.rand(1, 3, 20, 30)
    same = resize_bicubic(image, size=(20, 30))
    assert torch.equal(same, image)
    assert same.data_ptr() != image.data_ptr()


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"size": (10, 10), "scale": 2.0},
        {"size": (0, 10)},
        {"size": (10, -1)},
        {"size": (10, 10.5)},
        {"size": (10, 10, 10)},
        {"scale": 0.0},
        {"scale": -2.0},
        {"scale": float("nan")},
    ],
)
def test_bad_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        resize_bicubic(torch.rand(1, 3, 16, 16), **kwargs)


def test_bad_tensors_raise() -> None:
    with pytest.raises(ValueError):
        resize_bicubic(torch.rand(16, 16), size=(8, 8))
    with pytest.raises(TypeError):
        resize_bicubic(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), size=(8, 8))


def test_uint8_round_trip_is_exact() -> None:
    image = photo("astronaut")
    x = to_tensor(image)
    assert x.shape == (1, 3, *image.shape[:2]) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert np.array_equal(to_array(x), image)
    assert np.array_equal(to_array(x[0]), image)
    every_level = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(to_array(to_tensor(every_level)), every_level)
    assert to_tensor(every_level)[0, 0, 0, 0] == -1 and to_tensor(every_level)[0, 0, -1, -1] == 1


def test_uint16_round_trip_is_exact() -> None:
    every_level = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    assert np.array_equal(to_array(to_tensor(every_level), np.uint16), every_level)
    deep_photo = photo("coffee").astype(np.uint16) * 257 + 100
    assert np.array_equal(to_array(to_tensor(deep_photo), np.uint16), deep_photo)


def test_to_array_clamps_and_rounds() -> None:
    x = torch.tensor([-3.0, -1.0, 0.0, 1 / 255, 1.0, 7.0]).view(1, 1, 1, 6)
    assert to_array(x).tolist() == [[0, 0, 128, 128, 255, 255]]
    with pytest.raises(ValueError):
        to_array(torch.zeros(2, 3, 4, 4))
    with pytest.raises(TypeError):
        to_array(torch.zeros(3, 4, 4), np.float32)
    with pytest.raises(TypeError):
        to_tensor(np.zeros((4, 4, 3), dtype=np.float32))


def test_rgb_to_y_known_colours() -> None:
    colours = torch.tensor(
        [[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5]],
        dtype=torch.float64,
    )
    y = rgb_to_y(colours.T.reshape(3, 1, 6))
    expected = [16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966, 125.5]
    assert y.shape == (1, 1, 6)
    assert torch.allclose(y.flatten(), torch.tensor(expected, dtype=torch.float64), atol=1e-9)


def test_rgb_to_y_on_a_photo() -> None:
    image = photo("chelsea").astype(np.float64) / 255
    expected = 16 + image @ np.array([65.481, 128.553, 24.966])
    y = rgb_to_y(torch.from_numpy(image).permute(2, 0, 1)[None].float())
    assert y.shape == (1, 1, *image.shape[:2]) and y.dtype == torch.float32
    assert np.abs(y[0, 0].numpy() - expected).max() < 1e-3
    with pytest.raises(ValueError):
        rgb_to_y(torch.rand(1, 4, 8, 8))


def test_bicubic_degrade_crops_and_downscales() -> None:
    hr = to_tensor(data.chelsea())
    assert hr.shape[-2:] == (300, 451)
    hr_cropped, lr = bicubic_degrade(hr, 4)
    assert hr_cropped.shape == (1, 3, 300, 448) and lr.shape == (1, 3, 75, 112)
    assert torch.equal(hr_cropped, hr[..., :300, :448])
    assert torch.equal(lr, resize_bicubic(hr[..., :300, :448], size=(75, 112)))
    assert upscale_bicubic(lr, 4).shape == hr_cropped.shape
    hr_cropped, lr = bicubic_degrade(hr, 3)
    assert hr_cropped.shape[-2:] == (300, 450) and lr.shape[-2:] == (100, 150)
    with pytest.raises(ValueError):
        bicubic_degrade(hr, 0)
    with pytest.raises(ValueError):
        bicubic_degrade(hr[..., :2, :], 4)
