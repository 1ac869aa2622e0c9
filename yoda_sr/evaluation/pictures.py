"""The pictures of an evaluation, so that people look at the outputs and not only at the means.

- ``grid.png``: every evaluated image (the first ``GRID_ROWS``), one row each, named by its path at
  the left: LR (enlarged, nearest neighbour), each method, the ground truth; centre crops of at most
  ``GRID_CELL`` pixels.
- ``worst.png``: the ``WORST_ROWS`` images where yoda does worst against its reference (``base``,
  else ``bicubic``, else ``plain``) by LPIPS-VGG (else LPIPS-Alex, else PSNR-Y), worst first, each
  as a ``WORST_CROP`` px crop where yoda's squared error exceeds the reference's most (the metrics'
  border left out), enlarged ``WORST_ZOOM`` times, so texture the diffusion added (or detail it
  lost) shows. Each row names the image, both scores and where the crop is.

Both are drawn from the files the evaluation wrote (the LR and each method's result) and the ground
truth, so a resumed evaluation draws them whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import YodaError
from ..image.grids import labelled_grid
from ..image.io import read_picture, write_picture
from .baselines import ground_truth
from .methods import folder
from .results import Record

GRID_ROWS = 32
"""Images shown in grid.png (the first ones; per_image.csv has them all)."""
GRID_CELL = 256
"""Largest side of a grid cell: a centre crop of each image."""
WORST_ROWS = 4
"""Images shown in worst.png."""
WORST_CROP = 64
"""Side of a worst.png crop, in HR pixels."""
WORST_ZOOM = 3
"""How much worst.png enlarges its crops (nearest neighbour), so fine texture can be seen."""
REFERENCES = ("base", "bicubic", "plain")
"""What yoda is judged against in worst.png: the first of these that was compared."""
RANKING = {"lpips_vgg": "LPIPS-VGG", "lpips_alex": "LPIPS-Alex", "psnr_y": "PSNR-Y"}
"""The metrics worst.png may rank by, in order of preference (the first computed for every image)."""


@dataclass
class Worst:
    """One row of worst.png: an image, yoda's and the reference's scores, and the crop shown."""

    image: str
    score: float
    """How much worse yoda is than the reference (LPIPS: yoda's minus the reference's; PSNR-Y: the
    reference's minus yoda's); negative when yoda is better."""
    yoda: float
    reference: float
    crop: tuple[int, int, int] = (0, 0, 0)
    """Left, top and side of the crop, in HR pixels."""

    def to_json(self) -> dict[str, Any]:
        left, top, side = self.crop
        return {
            "image": self.image,
            "score": self.score,
            "yoda": self.yoda,
            "reference": self.reference,
            "crop": {"left": left, "top": top, "side": side},
        }


def _centre(image: np.ndarray, side: int) -> np.ndarray:
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    return image[top : top + side, left : left + side]


def _enlarged_lr(lr: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1)


def grid_labels(methods: Sequence[str], scale: int) -> list[str]:
    """Column labels of grid.png and worst.png: LR, each method, the ground truth."""
    return [f"LR (x{scale} nearest)", *methods, "HR (truth)"]


def worst_images(
    records: Sequence[Record], methods: Sequence[str], count: int = WORST_ROWS
) -> tuple[str, str, list[Worst]]:
    """(metric, reference, rows): the ``count`` images where yoda is worst against the reference,
    worst first (ties in the records' order); no rows without yoda or a reference."""
    reference = next((method for method in REFERENCES if method in methods), None)
    if "yoda" not in methods or reference is None:
        return "", "", []
    found = {(record.image, record.method): record for record in records}
    images = list(
        dict.fromkeys(r.image for r in records if (r.image, "yoda") in found and (r.image, reference) in found)
    )
    for metric in RANKING:
        pairs = [(getattr(found[(i, "yoda")], metric), getattr(found[(i, reference)], metric)) for i in images]
        if all(a is not None and b is not None and math.isfinite(a) and math.isfinite(b) for a, b in pairs):
            break
    else:
        return "", reference, []
    sign = -1.0 if metric == "psnr_y" else 1.0
    rows = [Worst(image, sign * (a - b), a, b) for image, (a, b) in zip(images, pairs, strict=True)]
    rows.sort(key=lambda row: -row.score)
    return metric, reference, rows[:count]


def worst_crop(
    hr: np.ndarray, subject: np.ndarray, reference: np.ndarray, border: int, side: int
) -> tuple[int, int, int]:
    """(left, top, side) of the ``side`` px window, inside ``border``, where ``subject``'s squared
    error against ``hr`` (mean over channels) exceeds ``reference``'s by the most in sum."""
    height, width = hr.shape[:2]
    border = border if min(height, width) > 2 * border else 0
    inner = [
        image[border : height - border, border : width - border].astype(np.float64)
        for image in (hr, subject, reference)
    ]
    excess = ((inner[1] - inner[0]) ** 2).mean(axis=-1) - ((inner[2] - inner[0]) ** 2).mean(axis=-1)
    side = max(1, min(side, *excess.shape))
    total = np.pad(excess.cumsum(axis=0).cumsum(axis=1), ((1, 0), (1, 0)))
    sums = total[side:, side:] - total[:-side, side:] - total[side:, :-side] + total[:-side, :-side]
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(left) + border, int(top) + border, side


def write_pictures(
    out: Path,
    images: Sequence[tuple[Path, str]],
    names: dict[str, Path],
    methods: Sequence[str],
    records: Sequence[Record],
    scale: int,
) -> dict[str, Any] | None:
    """Write grid.png and worst.png (module docstring) for the ``images`` (file, key) whose every
    method has a record; what worst.png shows, for summary.json (None when it is not drawn)."""
    done = {(record.image, record.method) for record in records}
    files: dict[str, tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]] = {}
    for image, key in images:
        if not all((key, method) in done for method in methods):
            continue
        try:
            hr = ground_truth(read_picture(image).rgb, scale)
            lr = read_picture(out / "lr" / names[key]).rgb
            results = {method: read_picture(out / folder(method) / names[key]).rgb for method in methods}
        except YodaError:
            continue
        files[key] = (hr, lr, results)
    labels = grid_labels(methods, scale)
    shown = list(files)[:GRID_ROWS]
    if shown:
        side = min(GRID_CELL, *(min(files[key][0].shape[:2]) for key in shown))
        rows = [
            [_centre(cell, side) for cell in (_enlarged_lr(lr, scale), *results.values(), hr)]
            for hr, lr, results in (files[key] for key in shown)
        ]
        write_picture(out / "grid.png", labelled_grid(rows, labels, row_labels=shown))
    metric, reference, worst = worst_images([r for r in records if r.image in files], methods)
    if not worst:
        return None
    inner = [min(files[row.image][0].shape[:2]) for row in worst]
    side = min(WORST_CROP, *(size - 2 * scale if size > 2 * scale else size for size in inner))  # one for all rows
    rows, row_labels = [], []
    for row in worst:
        hr, lr, results = files[row.image]
        row.crop = worst_crop(hr, results["yoda"], results[reference], scale, side)
        left, top, side = row.crop
        cells = [_enlarged_lr(lr, scale), *results.values(), hr]
        cells = [cell[top : top + side, left : left + side] for cell in cells]
        rows.append([np.repeat(np.repeat(cell, WORST_ZOOM, axis=0), WORST_ZOOM, axis=1) for cell in cells])
        digits = 2 if metric == "psnr_y" else 4
        row_labels.append(
            f"{row.image}\n{RANKING[metric]}: yoda {row.yoda:.{digits}f}, {reference} {row.reference:.{digits}f}\n"
            f"{side} px at x {left}, y {top} (x{WORST_ZOOM})"
        )
    write_picture(out / "worst.png", labelled_grid(rows, labels, row_labels=row_labels))
    return {"metric": metric, "against": reference, "rows": [row.to_json() for row in worst]}
