"""The results of an evaluation as numbers, text and pictures: per-method means, a Markdown table,
per-image CSV and a grid of centre crops (LR, each method, ground truth)."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

METRICS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "lpips_vgg", "lpips_alex")
LPIPS_COLUMNS = {"vgg": "LPIPS-VGG", "alex": "LPIPS-Alex"}
CSV_FIELDS = ("image", "method", *METRICS, "update_fraction", "seconds")
GRID_ROWS = 4
"""Images shown in grid.png."""
GRID_CELL = 256
"""Largest side of a grid cell: a centre crop of each image."""
GRID_GAP = 4
"""White pixels between grid cells."""


@dataclass
class Record:
    """The metrics of one method on one image (an LPIPS None when that backbone was not computed)."""

    image: str
    method: str
    psnr_y: float
    ssim_y: float
    psnr_rgb: float
    ssim_rgb: float
    lpips_vgg: float | None
    lpips_alex: float | None
    update_fraction: float | None
    """Fraction of pixel updates of a diffusion method (1.0 for plain), None for bicubic."""
    seconds: float


@dataclass
class Outcome:
    """One evaluated image: its ground truth, LR input, each method's result and metrics."""

    hr: np.ndarray
    lr: np.ndarray
    results: dict[str, np.ndarray]
    records: list[Record]


def _mean(values: list[float | None]) -> float | None:
    """Mean of the values; None if any is None (or there are none)."""
    present = [value for value in values if value is not None]
    if not values or len(present) < len(values):
        return None
    return float(np.mean(present))


def summarize(records: list[Record], methods: list[str]) -> dict[str, dict[str, float | None]]:
    """Per method: the mean over images of each metric, the update fraction and the seconds per image."""
    means: dict[str, dict[str, float | None]] = {}
    for method in methods:
        rows = [record for record in records if record.method == method]
        entry = {name: _mean([getattr(row, name) for row in rows]) for name in METRICS}
        entry["update_fraction"] = _mean([row.update_fraction for row in rows])
        entry["seconds_per_image"] = _mean([row.seconds for row in rows])
        means[method] = entry
    return means


def _cell(value: float | None, digits: int) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def markdown_table(means: dict[str, dict[str, float | None]], lpips: Sequence[str] = ()) -> list[str]:
    """The results as Markdown lines: a header, a rule and one row per method, with a column for
    each LPIPS backbone in ``lpips`` (those computed)."""
    columns = [LPIPS_COLUMNS[net] for net in lpips]
    header = ["method", "PSNR-Y", "SSIM-Y", "PSNR-RGB", "SSIM-RGB", *columns, "pixel updates", "s / image"]
    lines = [f"| {' | '.join(header)} |", "|---|" + "---:|" * (len(header) - 1)]
    for method, entry in means.items():
        cells = [
            _cell(entry["psnr_y"], 2),
            _cell(entry["ssim_y"], 4),
            _cell(entry["psnr_rgb"], 2),
            _cell(entry["ssim_rgb"], 4),
            *(_cell(entry[f"lpips_{net}"], 4) for net in lpips),
            _cell(entry["update_fraction"], 3),
            _cell(entry["seconds_per_image"], 2),
        ]
        lines.append(f"| {method} | {' | '.join(cells)} |")
    return lines


def per_image_csv(records: list[Record]) -> str:
    """The records as CSV text; floats at full precision, empty where not applicable."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for record in records:
        row = dataclasses.asdict(record)
        writer.writerow(["" if row[name] is None else row[name] for name in CSV_FIELDS])
    return buffer.getvalue()


def _centre(image: np.ndarray, side: int) -> np.ndarray:
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    return image[top : top + side, left : left + side]


def grid_row(outcome: Outcome, scale: int) -> list[np.ndarray]:
    """Grid cells of one image: LR (enlarged, nearest neighbour), each method, HR; centre crops of <= GRID_CELL."""
    side = min(GRID_CELL, *outcome.hr.shape[:2])
    lr = np.repeat(np.repeat(outcome.lr, scale, axis=0), scale, axis=1)
    return [_centre(image, side) for image in (lr, *outcome.results.values(), outcome.hr)]


def make_grid(rows: list[list[np.ndarray]]) -> np.ndarray:
    """Square cells side by side (rows of equal length) on white, cropped to the smallest cell's side."""
    side = min(min(cell.shape[:2]) for row in rows for cell in row)
    columns = len(rows[0])
    grid = np.full(
        (len(rows) * side + (len(rows) - 1) * GRID_GAP, columns * side + (columns - 1) * GRID_GAP, 3), 255, np.uint8
    )
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            top, left = r * (side + GRID_GAP), c * (side + GRID_GAP)
            grid[top : top + side, left : left + side] = _centre(cell, side)
    return grid


def json_number(value: float | None) -> float | None:
    """JSON has no infinity or NaN: those become null."""
    return value if value is None or math.isfinite(value) else None
