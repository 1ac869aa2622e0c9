"""Line plots as PNG (training curves): drawn with matplotlib when it is installed, with Pillow
otherwise, so matplotlib stays optional. Both put the legend below the axes, never over the
curves, and tick whole steps only."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .io import save_png

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189))
"""Series colours (matplotlib's first four), the same in both renderers."""
SIZE = (640, 400)
MARGIN = (72, 30, 24, 84)  # left, top, right, bottom (ticks, the x label, the legend)
INK = (34, 34, 34)

Series = dict[str, list[tuple[float, float]]]


def matplotlib_available() -> bool:
    """Whether matplotlib (with its Agg renderer) can be imported."""
    try:
        import matplotlib  # noqa: F401  (first: a hidden matplotlib hides its loaded submodules too)
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError:
        return False
    return True


def render_figure(figure: Figure) -> np.ndarray:
    """A matplotlib figure as an H x W x 3 uint8 array, at its own size and dpi (no pyplot, no
    global backend: a user's interactive matplotlib is left alone)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at ``size`` pixels (its bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    """About ``count`` round values (1-2-5 spacing) in [low, high]; whole numbers only if ``integer``."""
    if high <= low:
        return [round(low)] if integer else [low]
    step = 10 ** math.floor(math.log10((high - low) / count))
    for factor in (1, 2, 5, 10):
        if (high - low) / (step * factor) <= count:
            step *= factor
            break
    if integer:
        step = max(1, round(step))
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _finite(series: Series) -> Series:
    return {name: [(x, y) for x, y in values if math.isfinite(y)] for name, values in series.items()}


def line_figure(series: Series, ylabel: str) -> Figure:
    """The matplotlib figure of :func:`line_plot` (whole-step ticks, legend in a band below)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    width, height = SIZE
    figure = Figure(figsize=(width / 100, height / 100), dpi=100)
    left, top, right, bottom = MARGIN
    axes = figure.add_axes((left / width, bottom / height, 1 - (left + right) / width, 1 - (top + bottom) / height))
    for number, (name, values) in enumerate(_finite(series).items()):
        colour = tuple(c / 255 for c in COLOURS[number % len(COLOURS)])
        axes.plot([x for x, _ in values], [y for _, y in values], marker="o", markersize=3, color=colour, label=name)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(True, color="0.9")
    axes.set_xlabel("step")
    axes.set_ylabel(ylabel)
    handles, names = axes.get_legend_handles_labels()
    if handles:
        figure.legend(handles, names, loc="lower center", ncol=len(handles), frameon=False)
    return figure


def _pillow_line_plot(series: Series, ylabel: str) -> Image.Image:
    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image)
    text, small = font(14), font(12)
    left, top, right, bottom = MARGIN
    width, height = SIZE[0] - left - right, SIZE[1] - top - bottom
    series = _finite(series)
    points = [p for values in series.values() for p in values]
    draw.rectangle((left, top, left + width, top + height), outline=INK)
    draw.text((left, top - 6), ylabel, fill=INK, font=text, anchor="lb")
    draw.text((left + width / 2, top + height + 26), "step", fill=INK, font=text, anchor="mt")
    if points:
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
        pad = (max(ys) - min(ys)) * 0.05 or abs(max(ys)) * 0.05 or 1.0
        y0, y1 = min(ys) - pad, max(ys) + pad

        def at(x: float, y: float) -> tuple[float, float]:
            return left + (x - x0) / (x1 - x0) * width, top + (1 - (y - y0) / (y1 - y0)) * height

        for tick in ticks(y0, y1):
            _, y = at(x0, tick)
            draw.line((left - 4, y, left, y), fill=INK)
            draw.text((left - 7, y), f"{tick:.4g}", fill=INK, font=small, anchor="rm")
        for tick in ticks(x0, x1, integer=True):
            x, _ = at(tick, y0)
            draw.line((x, top + height, x, top + height + 4), fill=INK)
            draw.text((x, top + height + 7), f"{tick:g}", fill=INK, font=small, anchor="mt")
        for number, values in enumerate(series.values()):
            colour = COLOURS[number % len(COLOURS)]
            line = [at(x, y) for x, y in values]
            if len(line) > 1:
                draw.line(line, fill=colour, width=2)
            for x, y in line:
                draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
    _pillow_legend(draw, list(series), SIZE[0] / 2, SIZE[1] - 16, text)
    return image


def _pillow_legend(draw: ImageDraw.ImageDraw, names: Sequence[str], centre: float, middle: float, face: Any) -> None:
    """A one-row legend (a coloured line and the name per series) centred at (centre, middle)."""
    widths = [22 + draw.textbbox((0, 0), name, font=face)[2] for name in names]
    x = centre - (sum(widths) + 24 * (len(names) - 1)) / 2
    for number, (name, width) in enumerate(zip(names, widths, strict=True)):
        colour = COLOURS[number % len(COLOURS)]
        draw.line((x, middle, x + 16, middle), fill=colour, width=2)
        draw.text((x + 22, middle), name, fill=INK, font=face, anchor="lm")
        x += width + 24


def line_plot(series: Series, path: str | Path, ylabel: str) -> Path:
    """Draw each named series of (x = step, y) points as a line with markers, whole-step ticks and a
    legend below the axes; write a PNG (matplotlib when available, else Pillow)."""

    if matplotlib_available():
        return save_png(render_figure(line_figure(series, ylabel)), path)
    return save_png(_pillow_line_plot(series, ylabel), path)
