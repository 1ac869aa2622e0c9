"""Small line plots as PNG with Pillow alone (training curves), so matplotlib stays optional."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

_COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189))
_SIZE = (640, 400)
_MARGIN = (64, 24, 24, 48)  # left, top, right, bottom


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    step = 10 ** math.floor(math.log10((high - low) / count))
    for factor in (1, 2, 5, 10):
        if (high - low) / (step * factor) <= count:
            step *= factor
            break
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)]


def line_plot(series: dict[str, list[tuple[float, float]]], path: str | Path, ylabel: str) -> Path:
    """Draw each named series of (x, y) points as a line, with axes, ticks and a legend; write a PNG."""
    from .imageio import save_png

    image = Image.new("RGB", _SIZE, "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = _MARGIN
    width, height = _SIZE[0] - left - right, _SIZE[1] - top - bottom
    points = [p for values in series.values() for p in values if math.isfinite(p[1])]
    draw.rectangle((left, top, left + width, top + height), outline=(0, 0, 0))
    if points:
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
        pad = (max(ys) - min(ys)) * 0.05 or abs(max(ys)) * 0.05 or 1.0
        y0, y1 = min(ys) - pad, max(ys) + pad

        def at(x: float, y: float) -> tuple[float, float]:
            return left + (x - x0) / (x1 - x0) * width, top + (1 - (y - y0) / (y1 - y0)) * height

        for tick in _ticks(y0, y1):
            _, y = at(x0, tick)
            draw.line((left - 4, y, left, y), fill=(0, 0, 0))
            draw.text((4, y - 6), f"{tick:.4g}", fill=(0, 0, 0))
        for tick in _ticks(x0, x1):
            x, _ = at(tick, y0)
            draw.line((x, top + height, x, top + height + 4), fill=(0, 0, 0))
            draw.text((x - 12, top + height + 8), f"{tick:g}", fill=(0, 0, 0))
        for number, (name, values) in enumerate(series.items()):
            colour = _COLOURS[number % len(_COLOURS)]
            line = [at(x, y) for x, y in values if math.isfinite(y)]
            if len(line) > 1:
                draw.line(line, fill=colour, width=2)
            for x, y in line:
                draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
            draw.text((left + 8, top + 6 + 14 * number), name, fill=colour)
    draw.text((left, _SIZE[1] - 18), f"step    ({ylabel})", fill=(0, 0, 0))
    return save_png(image, path)
