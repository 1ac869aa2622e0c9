"""Pictures of attention maps: colour map, heat maps, overlays, the M(t) timeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from yoda_sr.attention.render import colormap, heatmap, overlay, timeline

from conftest import photo


def lightness(rgb: np.ndarray) -> np.ndarray:
    """CIE L* of sRGB uint8 colours (... x 3), from the relative luminance Y (IEC 61966-2-1)."""
    encoded = rgb.astype(np.float64) / 255.0
    linear = np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4)
    luminance = linear @ np.array([0.2126, 0.7152, 0.0722])
    cube_root = np.where(luminance > (6 / 29) ** 3, np.cbrt(luminance), luminance / (3 * (6 / 29) ** 2) + 4 / 29)
    return 116.0 * cube_root - 16.0


def test_colour_map_lightness_rises_from_dark_to_bright():
    table = colormap()
    assert table.shape == (256, 3) and table.dtype == np.uint8
    lightness_along = lightness(table)
    steps = np.diff(lightness_along)
    # viridis is uniform in CAM02-UCS, not in L*: 8-bit rounding leaves dips of at most 0.04 L*
    assert steps.min() > -0.05, f"L* falls at entry {int(steps.argmin())}"
    assert np.all(lightness_along[16:] > lightness_along[:-16])
    assert lightness_along[0] < 20 and lightness_along[-1] > 85
    assert len({tuple(colour) for colour in table}) >= 250


def test_colour_map_runs_from_blue_violet_to_yellow():
    first, last = colormap()[0].astype(int), colormap()[-1].astype(int)
    assert first[2] > first[0] > first[1]  # blue-violet: blue strongest, some red
    assert min(last[0], last[1]) > 200 and last[2] < 100  # yellow
    middle = colormap()[128].astype(int)
    assert middle[1] > middle[0] and middle[2] > middle[0]  # teal in the middle


def test_colour_map_is_read_only():
    with pytest.raises(ValueError):
        colormap()[0, 0] = 1


def test_heatmap_colours_levels_and_clips():
    attention = np.array([[0.0, 1.0], [-0.5, 2.0], [np.nan, 0.5]])
    colours = heatmap(attention)
    assert colours.shape == (3, 2, 3) and colours.dtype == np.uint8
    table = colormap()
    np.testing.assert_array_equal(colours[0, 0], table[0])
    np.testing.assert_array_equal(colours[0, 1], table[-1])
    np.testing.assert_array_equal(colours[1], table[[0, -1]])
    np.testing.assert_array_equal(colours[2, 0], table[0])
    np.testing.assert_array_equal(colours[2, 1], table[128])


def test_heatmap_brightness_follows_attention():
    ramp = np.tile(np.linspace(0.0, 1.0, 300), (4, 1))
    along = lightness(heatmap(ramp)[0])
    assert np.diff(along).min() > -0.05 and along[-1] - along[0] > 70


def test_heatmap_takes_a_map_tensor():
    attention = torch.rand(1, 1, 6, 5, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(heatmap(attention), heatmap(attention[0, 0].numpy()))


def test_overlay_blends_heat_map_over_the_image():
    image = photo()[:64, :96]
    attention = np.linspace(0.0, 1.0, 64 * 96).reshape(64, 96)
    np.testing.assert_array_equal(overlay(image, attention, alpha=0.0), image)
    np.testing.assert_array_equal(overlay(image, attention, alpha=1.0), heatmap(attention))
    half = overlay(image, attention)
    expected = (image.astype(float) + heatmap(attention).astype(float)) / 2
    assert half.dtype == np.uint8 and np.abs(half - expected).max() <= 0.5 + 1e-9


def test_overlay_resizes_the_map_to_the_image():
    image = photo()[:60, :80]
    small = np.zeros((15, 20))
    small[:, 10:] = 1.0
    blended = overlay(image, small, alpha=1.0)
    assert blended.shape == image.shape
    np.testing.assert_array_equal(blended[:, :35], np.broadcast_to(colormap()[0], (60, 35, 3)))
    np.testing.assert_array_equal(blended[:, 45:], np.broadcast_to(colormap()[-1], (60, 35, 3)))


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_overlay_rejects_alpha_outside_unit_interval(alpha):
    with pytest.raises(ValueError):
        overlay(photo()[:8, :8], np.zeros((8, 8)), alpha=alpha)


def test_overlay_rejects_non_rgb_uint8():
    with pytest.raises(ValueError):
        overlay(np.zeros((8, 8), dtype=np.uint8), np.zeros((8, 8)))


def strip_brightness(picture: Image.Image) -> float:
    """Mean grey level of the band of M(t) panels (below the title and labels, above the plot)."""
    pixels = np.asarray(picture.convert("L"), dtype=np.float64)
    return float(pixels[70:200].mean())


def test_timeline_draws_active_pixels_bright_and_inactive_dark():
    inactive = timeline(np.zeros((48, 64)), lower_bound=0.0, train_steps=100, frames=4)
    active = timeline(np.ones((48, 64)), lower_bound=0.0, train_steps=100, frames=4)
    assert inactive.mode == "RGB" and inactive.size == active.size
    assert strip_brightness(active) > strip_brightness(inactive) + 60


def test_timeline_panels_light_up_as_t_falls():
    # Left half A = 0, right half A = 1: with l = 0.5 the right half is active for every t and the
    # left half only for t <= T/2, so the last panel (t = 1) is brighter than the first (t = T).
    attention = np.zeros((64, 64))
    attention[:, 32:] = 1.0
    picture = np.asarray(timeline(attention, 0.5, 10, 2).convert("L"), dtype=np.float64)
    band = picture[70:200]
    first, last = band[:, : picture.shape[1] // 2], band[:, picture.shape[1] // 2 :]
    assert last.mean() > first.mean() + 20


def test_timeline_size_follows_frames_and_stays_bounded():
    attention = np.random.default_rng(0).random((96, 128))
    widths = [timeline(attention, 0.2, 500, frames).size[0] for frames in (1, 4, 8)]
    assert widths[0] <= widths[1] < widths[2]
    many = timeline(attention, 0.2, 500, 40)
    assert many.size[0] <= 2200 and many.size[1] < 800


def test_timeline_handles_more_frames_than_steps_and_odd_shapes():
    assert timeline(np.random.default_rng(1).random((300, 20)), 0.3, 5, 12).mode == "RGB"
    assert timeline(np.random.default_rng(2).random((10, 400)), 1.0, 1, 3).mode == "RGB"


@pytest.mark.parametrize(
    "arguments",
    [(1.5, 500, 4), (-0.1, 500, 4), (0.2, 0, 4), (0.2, 500, 0), (0.2, 2.5, 4), (0.2, 500, True)],
)
def test_timeline_rejects_bad_arguments(arguments):
    lower_bound, train_steps, frames = arguments
    with pytest.raises(ValueError):
        timeline(np.zeros((8, 8)), lower_bound, train_steps, frames)


def test_the_heatmap_colours_a_large_map_in_row_chunks_as_it_would_whole(monkeypatch):
    """Chunks of rows (so a gigapixel map needs no float64 copies of itself) give the whole map's
    colours, NaN as 0 and values clipped to [0, 1] included."""
    import yoda_sr.attention.render as render
    from yoda_sr.image.colormap import colormap

    values = np.random.default_rng(0).uniform(-0.2, 1.2, (37, 23)).astype(np.float32)
    values[5, 7] = np.nan
    expected = colormap()[np.round(np.clip(np.nan_to_num(values.astype(np.float64)), 0, 1) * 255).astype(np.intp)]
    monkeypatch.setattr(render, "_HEATMAP_ROWS_PIXELS", 50)  # two rows at a time, the last one alone
    assert np.array_equal(render.heatmap(values), expected)
