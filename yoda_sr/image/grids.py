"""Image grids people read (evaluate's grid.png and worst.png, training's samples/step_*.png): cells
side by side under column labels, row labels in a band at the left when given (one or more lines
each), and a colour bar when some cells are heat maps (values 0..1, viridis).

Cells keep their pixels: small ones are enlarged by a whole factor (nearest neighbour) so that each
is at least ``MIN_CELL`` pixels wide and a label fits above it. The labels and the colour bar are
drawn with matplotlib when it is installed, with Pillow's default font otherwise; the cells are the
same pixels either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .colormap import colormap
from .plots import INK, font, matplotlib_available, render_figure

MIN_CELL = 96
"""Narrowest cell, in output pixels, after enlarging."""
GAP = 4
"""White pixels between cells and around the grid."""
HEADER = 24
"""Height of the label band above the cells."""
_BAR_GAP, _BAR_WIDTH, _BAR_LABELS, _BAR_FOOT = 14, 14, 34, 6
_FONT_PX = 13
_LINE_PX = 16
MAX_BAND = 360
"""Widest row-label band, in pixels; longer lines are shortened in the middle."""


@dataclass(frozen=True)
class Layout:
    """Where everything goes, in pixels of the output picture."""

    zoom: int
    cell: tuple[int, int]
    """Height and width of an enlarged cell."""
    rows: int
    columns: int
    bar: tuple[int, int, int, int] | None
    """Colour bar: left, top, width, height."""
    band: int = 0
    """Width of the row-label band at the left (0: no row labels)."""

    @property
    def grid_width(self) -> int:
        return self.band + GAP + self.columns * (self.cell[1] + GAP)

    @property
    def width(self) -> int:
        return self.grid_width + (_BAR_GAP + _BAR_WIDTH + _BAR_LABELS if self.bar else 0)

    @property
    def height(self) -> int:
        return HEADER + self.rows * (self.cell[0] + GAP) + (_BAR_FOOT if self.bar else 0)

    def origin(self, row: int, column: int) -> tuple[int, int]:
        """Top-left corner of a cell."""
        return HEADER + row * (self.cell[0] + GAP), self.band + GAP + column * (self.cell[1] + GAP)

    def label_centre(self, column: int) -> tuple[float, float]:
        return self.band + GAP + column * (self.cell[1] + GAP) + self.cell[1] / 2, HEADER / 2

    def row_label_lines(self, row: int, count: int) -> list[tuple[float, float]]:
        """Where each of a row label's ``count`` lines starts (left, vertical centre)."""
        middle = HEADER + row * (self.cell[0] + GAP) + self.cell[0] / 2
        return [(GAP, middle + (index - (count - 1) / 2) * _LINE_PX) for index in range(count)]


def _measure() -> Callable[[str], float]:
    """Width in pixels of a line of label text, in the font the labels are drawn with."""
    face = font(_FONT_PX)
    if matplotlib_available():
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"  # matplotlib's default
        if path.is_file():
            face = ImageFont.truetype(str(path), _FONT_PX)
    return face.getlength


def fit_row_labels(row_labels: Sequence[str] | None) -> tuple[int, list[list[str]]]:
    """The row-label band's width (0 for none) and each label's lines, a line wider than the band's
    most (``MAX_BAND``) shortened in the middle."""
    if not row_labels:
        return 0, []
    width = _measure()
    room = MAX_BAND - 2 * GAP
    fitted = [[_shortened(line, width, room) for line in label.splitlines() or [""]] for label in row_labels]
    longest = max(width(line) for lines in fitted for line in lines)
    return min(MAX_BAND, math.ceil(longest) + 2 * GAP + 2), fitted


def _shortened(line: str, width: Callable[[str], float], room: float) -> str:
    """``line``, or as much of its start and end as fits in ``room`` pixels around "..."."""
    keep = len(line)
    candidate = line
    while width(candidate) > room and keep > 2:
        keep -= 1
        head = keep // 2
        candidate = line[:head] + "..." + line[len(line) - (keep - head) :]
    return candidate


def layout(rows: int, columns: int, cell: tuple[int, int], colorbar: bool, band: int = 0) -> Layout:
    """The layout of ``rows`` x ``columns`` cells of ``cell`` (height, width) pixels, with a row-label
    band ``band`` pixels wide at the left (``fit_row_labels``)."""
    zoom = max(1, math.ceil(MIN_CELL / cell[1]))
    height, width = cell[0] * zoom, cell[1] * zoom
    bar = None
    if colorbar:
        grid_width = band + GAP + columns * (width + GAP)
        bar_height = rows * (height + GAP) - GAP
        bar = (grid_width + _BAR_GAP - GAP, HEADER, _BAR_WIDTH, bar_height)
    return Layout(zoom, (height, width), rows, columns, bar, band)


def labelled_grid(
    rows: Sequence[Sequence[np.ndarray]],
    labels: Sequence[str],
    colorbar: str | None = None,
    row_labels: Sequence[str] | None = None,
) -> np.ndarray:
    """An H x W x 3 uint8 picture of equal-sized H x W x 3 uint8 ``rows`` of cells, one label above
    each column; with ``row_labels`` (one per row, lines split at newlines), a band at the left
    naming each row; with ``colorbar`` (its title), a viridis bar for values 0 to 1 at the right."""
    if not rows or not rows[0]:
        raise ValueError("a grid needs at least one cell")
    shape = rows[0][0].shape
    if any(len(row) != len(labels) for row in rows) or any(cell.shape != shape for row in rows for cell in row):
        raise ValueError(f"every row needs {len(labels)} cells of shape {shape}")
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f"{len(rows)} rows need as many row labels, got {len(row_labels)}")
    band, lines = fit_row_labels(row_labels)
    plan = layout(len(rows), len(labels), (shape[0], shape[1]), colorbar is not None, band)
    canvas = np.full((plan.height, plan.width, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            top, left = plan.origin(r, c)
            big = np.repeat(np.repeat(cell, plan.zoom, axis=0), plan.zoom, axis=1)
            canvas[top : top + plan.cell[0], left : left + plan.cell[1]] = big
    if matplotlib_available():
        return _matplotlib_labels(canvas, plan, labels, colorbar, lines)
    return _pillow_labels(canvas, plan, labels, colorbar, lines)


def _pillow_labels(
    canvas: np.ndarray, plan: Layout, labels: Sequence[str], colorbar: str | None, rows: list[list[str]]
) -> np.ndarray:

    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    face, small = font(_FONT_PX), font(11)
    for column, label in enumerate(labels):
        draw.text(plan.label_centre(column), label, fill=INK, font=face, anchor="mm")
    for row, lines in enumerate(rows):
        for place, line in zip(plan.row_label_lines(row, len(lines)), lines, strict=True):
            draw.text(place, line, fill=INK, font=face, anchor="lm")
    if plan.bar is not None and colorbar is not None:
        left, top, width, height = plan.bar
        values = np.linspace(1.0, 0.0, height)
        strip = colormap()[np.round(values * 255).astype(np.intp)]
        image.paste(Image.fromarray(np.repeat(strip[:, None], width, axis=1)), (left, top))
        draw.rectangle((left - 1, top - 1, left + width, top + height), outline=INK)
        for value in (0.0, 0.5, 1.0):
            y = top + (1 - value) * (height - 1)
            draw.line((left + width, y, left + width + 3, y), fill=INK)
            draw.text((left + width + 5, y), f"{value:g}", fill=INK, font=small, anchor="lm")
        draw.text((left + width / 2, HEADER / 2), colorbar, fill=INK, font=face, anchor="mm")
    return np.asarray(image)


def _matplotlib_labels(
    canvas: np.ndarray, plan: Layout, labels: Sequence[str], colorbar: str | None, rows: list[list[str]]
) -> np.ndarray:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.figure import Figure

    dpi = 100
    figure = Figure(figsize=(plan.width / dpi, plan.height / dpi), dpi=dpi)
    figure.figimage(canvas, xo=0, yo=0, origin="upper", zorder=-1)
    points = _FONT_PX * 72 / dpi
    for column, label in enumerate(labels):
        x, y = plan.label_centre(column)
        figure.text(x / plan.width, 1 - y / plan.height, label, ha="center", va="center", fontsize=points)
    for row, lines in enumerate(rows):
        for (x, y), line in zip(plan.row_label_lines(row, len(lines)), lines, strict=True):
            text = line.replace("$", r"\$")  # a file name is no mathtext
            figure.text(x / plan.width, 1 - y / plan.height, text, ha="left", va="center", fontsize=points)
    if plan.bar is not None and colorbar is not None:
        left, top, width, height = plan.bar
        axes = figure.add_axes(
            (left / plan.width, 1 - (top + height) / plan.height, width / plan.width, height / plan.height)
        )
        mappable = ScalarMappable(norm=Normalize(0, 1), cmap=ListedColormap(colormap() / 255.0))
        bar = figure.colorbar(mappable, cax=axes, ticks=[0, 0.5, 1])
        bar.ax.tick_params(labelsize=points * 0.85, length=3)
        bar.outline.set_linewidth(0.8)
        x = (left + width / 2) / plan.width
        figure.text(x, 1 - HEADER / 2 / plan.height, colorbar, ha="center", va="center", fontsize=points)
    return render_figure(figure)
