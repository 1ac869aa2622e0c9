"""Pictures people read: labelled image grids with a colour bar, training curves, the M(t) legend.

Grids and curves are drawn with matplotlib when it is installed and with Pillow otherwise; every
test here runs on both (the Pillow path by hiding matplotlib from the import system).
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from yoda_sr.attention.render import LEGEND_ENTRIES, heatmap, legend_swatch, timeline
from yoda_sr.image import plots
from yoda_sr.image.colormap import colormap
from yoda_sr.image.grids import HEADER, labelled_grid, layout
from yoda_sr.image.plots import line_figure, line_plot, render_figure, ticks
from yoda_sr.training.run_folder import GRID_LABELS, RunFolder


@pytest.fixture(params=["matplotlib", "pillow"])
def backend(request, monkeypatch) -> str:
    if request.param == "pillow":
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    assert plots.matplotlib_available() == (request.param == "matplotlib")
    return request.param


def zoomed(cell: np.ndarray, zoom: int) -> np.ndarray:
    return np.repeat(np.repeat(cell, zoom, axis=0), zoom, axis=1)


def assert_labelled(picture: np.ndarray, plan) -> None:
    """Every column has dark label pixels in the band above it, centred on the column."""
    band = picture[:HEADER].min(axis=2) < 128
    for column in range(plan.columns):
        left = plan.origin(0, column)[1]
        ink = band[:, left : left + plan.cell[1]]
        assert ink.sum() > 10, f"no label above column {column}"
        xs = np.nonzero(ink.any(axis=0))[0]
        assert abs((xs.min() + xs.max()) / 2 - plan.cell[1] / 2) <= 4, f"label of column {column} is not centred"


def assert_colour_bar(picture: np.ndarray, plan) -> None:
    """The bar's middle column runs through viridis from 1 (top) to 0 (bottom)."""
    left, top, width, height = plan.bar
    strip = picture[top + 2 : top + height - 2, left + width // 2].astype(int)
    expected = colormap()[np.round(np.linspace(1, 0, height)[2 : height - 2] * 255).astype(int)].astype(int)
    assert np.abs(strip - expected).max() <= 12


def test_grid_keeps_every_cell_labels_every_column_and_draws_a_colour_bar(backend):
    rng = np.random.default_rng(0)
    rows = [[rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)] for _ in range(2)]
    picture = labelled_grid(rows, ["LR", "bicubic", "attention"], colorbar="A")
    plan = layout(2, 3, (32, 32), colorbar=True)
    assert plan.zoom == 3 and plan.cell == (96, 96)
    assert picture.shape == (plan.height, plan.width, 3) and picture.dtype == np.uint8
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            top, left = plan.origin(r, c)
            np.testing.assert_array_equal(picture[top : top + 96, left : left + 96], zoomed(cell, 3))
    assert_labelled(picture, plan)
    assert_colour_bar(picture, plan)


def test_grid_refuses_cells_of_different_sizes():
    cells = [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8)]
    with pytest.raises(ValueError, match="cells of shape"):
        labelled_grid([cells], ["a", "b"])


def test_training_sample_grid_labels_its_columns_and_explains_the_heat_map(backend, tmp_path):
    generator = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 32, 32, generator=generator) * 2 - 1
    lr = hr[..., ::4, ::4]
    attention = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(2, 1, 32, 32)
    path = RunFolder(tmp_path).write_grid(7, lr, hr, hr, hr, attention)
    assert path == tmp_path / "samples" / "step_000007.png"
    with Image.open(path) as image:
        picture = np.asarray(image.convert("RGB"))
    plan = layout(2, len(GRID_LABELS), (32, 32), colorbar=True)
    assert picture.shape == (plan.height, plan.width, 3)
    top, left = plan.origin(1, 4)
    expected = zoomed(heatmap(attention[1, 0].numpy()), plan.zoom)
    np.testing.assert_array_equal(picture[top : top + plan.cell[0], left : left + plan.cell[1]], expected)
    assert_labelled(picture, plan)
    assert_colour_bar(picture, plan)


def curves(names: tuple[str, str]) -> dict[str, list[tuple[float, float]]]:
    """Two series that sweep the whole plot area, top to bottom and back."""
    steps = range(1, 41)
    return {
        names[0]: [(step, math.cos(step / 40 * math.pi)) for step in steps],
        names[1]: [(step, -math.cos(step / 40 * math.pi)) for step in steps],
    }


def test_line_plot_legend_is_never_over_the_curves(backend, tmp_path):
    line_plot(curves(("a", "b")), tmp_path / "short.png", "loss")
    line_plot(curves(("a much longer name", "and another one")), tmp_path / "long.png", "loss")
    with Image.open(tmp_path / "short.png") as a, Image.open(tmp_path / "long.png") as b:
        short, long = np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB"))
    assert short.shape == long.shape == (plots.SIZE[1], plots.SIZE[0], 3)
    changed = np.nonzero((short != long).any(axis=2).any(axis=1))[0]
    axes_bottom = plots.SIZE[1] - plots.MARGIN[3]
    assert changed.size and changed.min() > axes_bottom + 30, (changed.min(), axes_bottom)  # below ticks and label


def test_line_plot_ticks_whole_steps(backend):
    points = {"loss": [(1, 0.5), (2, 0.4), (3, 0.3)]}
    if backend == "matplotlib":
        figure = line_figure(points, "loss")
        render_figure(figure)
        values = [tick for tick in figure.axes[0].get_xticks() if 1 <= tick <= 3]
    else:
        values = ticks(1, 3, integer=True)
    assert values and all(float(value).is_integer() for value in values), values
    assert [float(value) for value in ticks(0, 1000, integer=True)] == [0, 200, 400, 600, 800, 1000]


def contains(picture: np.ndarray, patch: np.ndarray) -> bool:
    """Whether ``patch`` occurs in ``picture`` pixel for pixel."""
    height, width = patch.shape[:2]
    for y, x in zip(*np.nonzero((picture == patch[0, 0]).all(axis=2)), strict=True):
        if np.array_equal(picture[y : y + height, x : x + width], patch):
            return True
    return False


def test_timeline_has_a_legend_of_its_mask_colours():
    # A = 1 everywhere: every panel is uniformly active, so the inactive swatch can only be the legend's
    picture = np.asarray(timeline(np.ones((48, 64)), lower_bound=0.0, train_steps=100, frames=3))
    assert [active for active, _ in LEGEND_ENTRIES] == [True, False]
    for active, text in LEGEND_ENTRIES:
        assert contains(picture, legend_swatch(active)), text
    assert "M(t) = 1" in LEGEND_ENTRIES[0][1] and "M(t) = 0" in LEGEND_ENTRIES[1][1]
