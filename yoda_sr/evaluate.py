"""`yoda-sr evaluate`: PSNR, SSIM and LPIPS of a model against bicubic and plain diffusion.

Each ground-truth (HR) image is read, made 8-bit RGB, cropped top-left to a multiple of the scale and
shrunk with the project's bicubic (``imaging.bicubic_degrade``); the LR is rounded to 8 bits, as a
user's LR file would be. Every compared method gets that same LR, and the diffusion methods the same
per-image seed (``seeds.derive_seed`` of the base seed and the image's relative path):

- ``bicubic``: the LR enlarged with the project's bicubic;
- ``plain``: the model with attention ``none`` (every pixel diffused at every step);
- ``yoda``: the model with its own attention method, or ``--attention``.

Metrics (``metrics.image_metrics``, and LPIPS when available) leave out a border of ``scale`` pixels;
the reported numbers are means over images.
The output folder gets per_image.csv, summary.json, grid.png, the LR inputs (lr/) and every method's
results (<method>/), all PNG; stdout gets a Markdown table with one row per method.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import typer

from ._version import __version__
from .api import Settings, Upscaler
from .errors import UsageError, YodaError
from .files import find_images
from .imageio import read_picture, write_picture
from .imaging import bicubic_degrade, resize_bicubic, to_array, to_tensor
from .metrics import SSIM_RADIUS, Lpips, crop_border, image_metrics, lpips_available
from .seeds import derive_seed

METHODS = ("bicubic", "plain", "yoda")
"""Methods ``--compare`` can name, in the order they are reported by default."""
METRICS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "lpips")
CSV_FIELDS = ("image", "method", *METRICS, "update_fraction", "seconds")
GRID_ROWS = 4
"""Images shown in grid.png."""
GRID_CELL = 256
"""Largest side of a grid cell: a centre crop of each image."""
GRID_GAP = 4
"""White pixels between grid cells."""


@dataclass
class Record:
    """The metrics of one method on one image (``lpips`` None when not computed)."""

    image: str
    method: str
    psnr_y: float
    ssim_y: float
    psnr_rgb: float
    ssim_rgb: float
    lpips: float | None
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


def parse_compare(text: str) -> list[str]:
    """The methods of a ``--compare`` value (comma-separated), in order and without repeats."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise UsageError(f"--compare: unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    if not names:
        raise UsageError(f"--compare needs at least one of {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def ground_truth(rgb: np.ndarray, scale: int) -> np.ndarray:
    """An H x W x 3 uint8/uint16 image as uint8, cropped top-left to sides that are multiples of ``scale``."""
    if rgb.dtype == np.uint16:
        rgb = ((rgb.astype(np.uint32) + 128) // 257).astype(np.uint8)
    height, width = rgb.shape[0] // scale * scale, rgb.shape[1] // scale * scale
    return np.ascontiguousarray(rgb[:height, :width])


def degrade(hr: np.ndarray, scale: int) -> np.ndarray:
    """The uint8 LR input of a uint8 HR image: the project's bicubic downscale, rounded to 8 bits."""
    _, lr = bicubic_degrade(to_tensor(hr), scale)
    return to_array(lr)


def bicubic_upscale(lr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The bicubic baseline: a uint8 LR image enlarged to ``size`` (height, width)."""
    return to_array(resize_bicubic(to_tensor(lr), size=size))


class Evaluation:
    """Runs the compared methods on HR images, one image at a time.

    ``settings`` are the yoda method's, resolved (``Upscaler.resolve``); plain uses them with attention none.
    """

    def __init__(
        self,
        upscaler: Upscaler,
        methods: list[str],
        settings: Settings,
        scale: int,
        seed: int = 0,
        lpips: Lpips | None = None,
    ) -> None:
        self.upscaler = upscaler
        self.methods = methods
        self.scale = scale
        self.seed = seed
        self.lpips = lpips
        self.settings = {
            "plain": dataclasses.replace(settings, attention="none"),
            "yoda": settings,
        }

    def image(self, rgb: np.ndarray, key: str) -> Outcome:
        """Evaluate every method on one HR image; ``key`` (its relative path) names it and seeds it."""
        hr = ground_truth(rgb, self.scale)
        smallest = 2 * SSIM_RADIUS + 1 + 2 * self.scale
        if min(hr.shape[:2]) < smallest:
            height, width = rgb.shape[:2]
            raise YodaError(f"is {width}x{height}; evaluating at x{self.scale} needs at least {smallest} pixels a side")
        lr = degrade(hr, self.scale)
        seed = derive_seed(self.seed, key)
        results: dict[str, np.ndarray] = {}
        records = []
        for method in self.methods:
            if method == "bicubic":
                start = time.perf_counter()
                image = bicubic_upscale(lr, hr.shape[:2])
                seconds, fraction = time.perf_counter() - start, None
            else:
                result = self.upscaler.upscale(lr, seed=seed, scale=self.scale, settings=self.settings[method])
                image, seconds, fraction = result.image, result.seconds, result.update_fraction
            scores = image_metrics(image, hr, self.scale)
            distance = None
            if self.lpips is not None:
                distance = self.lpips(crop_border(image, self.scale), crop_border(hr, self.scale))
            results[method] = image
            records.append(Record(key, method, **scores, lpips=distance, update_fraction=fraction, seconds=seconds))
        return Outcome(hr, lr, results, records)


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


def markdown_table(means: dict[str, dict[str, float | None]]) -> list[str]:
    """The results as Markdown lines: a header, a rule and one row per method."""
    lines = [
        "| method | PSNR-Y | SSIM-Y | PSNR-RGB | SSIM-RGB | LPIPS | pixel updates | s / image |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, entry in means.items():
        cells = [
            _cell(entry["psnr_y"], 2),
            _cell(entry["ssim_y"], 4),
            _cell(entry["psnr_rgb"], 2),
            _cell(entry["ssim_rgb"], 4),
            _cell(entry["lpips"], 4),
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


def _json_number(value: float | None) -> float | None:
    """JSON has no infinity or NaN: those become null."""
    return value if value is None or math.isfinite(value) else None


def _output_names(keys: list[str]) -> dict[str, Path]:
    """Relative PNG path of each image's outputs: its key with .png, or key + .png where stems collide."""
    names: dict[str, Path] = {}
    taken: set[Path] = set()
    for key in keys:
        name = Path(key).with_suffix(".png")
        if name in taken:
            name = Path(f"{key}.png")
        taken.add(name)
        names[key] = name
    return names


def _write_text(path: Path, text: str) -> None:
    """Write a UTF-8 text file atomically."""
    from .fsutil import atomic_write_bytes

    atomic_write_bytes(path, text.encode("utf-8"))


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse an --out that is a file, or a non-empty folder without --overwrite."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"--out {out} is not empty; pass --overwrite to replace its results, or choose another folder")


def run(
    ctx: typer.Context,
    data: Path,
    model: str | None,
    scale: int | None,
    steps: int | None,
    attention: str,
    lower_bound: float | None,
    compare: str,
    seed: int,
    device: str,
    dtype: str,
    limit: int | None,
    recursive: bool,
    out: Path | None,
    overwrite: bool,
    quiet: bool,
) -> None:
    """The body of `yoda-sr evaluate` (see cli.evaluate for the options)."""
    from .attention import MissingWeightsError

    debug = bool(ctx.find_root().params.get("debug"))
    methods = parse_compare(compare)
    if scale is not None and scale < 1:
        raise UsageError(f"--scale must be a positive integer, got {scale}")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    if not data.exists():
        raise YodaError(f"--data {data}: no such folder")
    search = find_images([data], recursive)
    if not quiet:
        for note in search.notes:
            typer.echo(f"yoda-sr: {note}", err=True)
    if not search.images:
        raise YodaError(f"no images found in {data}")
    if out is not None:
        _check_out(out, overwrite)

    upscaler = Upscaler.from_pretrained(model, device=device, dtype=dtype)
    scale = upscaler.scale if scale is None else scale
    if scale > upscaler.scale:
        raise UsageError(f"--scale {scale}: {upscaler.name} upscales by at most {upscaler.scale}")
    settings = upscaler.resolve(Settings(steps=steps, attention=attention, lower_bound=lower_bound))
    if out is None:
        out = Path(f"eval_{re.sub(r'[^A-Za-z0-9._-]+', '_', upscaler.name)}")
        _check_out(out, overwrite)
    results_folder = out.resolve()
    found = [
        (image, relative) for image, relative in search.images if not image.resolve().is_relative_to(results_folder)
    ]
    found = found[:limit] if limit is not None else found
    if not found:
        raise YodaError(f"no images found in {data} outside --out {out}")

    lpips_model = None
    lpips_ok, lpips_note = lpips_available()
    if lpips_ok:
        try:
            lpips_model = Lpips(upscaler.device)
        except YodaError as error:
            lpips_note = str(error)
    evaluation = Evaluation(upscaler, methods, settings, scale, seed, lpips_model)
    if not quiet:
        typer.echo(
            f"yoda-sr: evaluating {upscaler.name} on {len(found)} image(s) at x{scale}, {settings.steps} "
            f"{settings.sampler} steps, yoda attention {settings.attention} (l = {settings.lower_bound:g}), "
            f"{upscaler.device} ({str(upscaler.dtype).removeprefix('torch.')}): {', '.join(methods)} -> {out}",
            err=True,
        )
        if "yoda" in methods and settings.attention == "none":
            typer.echo("yoda-sr: note: the yoda method uses attention none here, so it equals plain", err=True)

    keys = [(relative / image.name).as_posix() for image, relative in found]
    names = _output_names(keys)
    records: list[Record] = []
    grid: list[list[np.ndarray]] = []
    failures = 0
    start = time.perf_counter()
    for index, ((path, _), key) in enumerate(zip(found, keys, strict=True), start=1):
        try:
            outcome = evaluation.image(read_picture(path).rgb, key)
            write_picture(out / "lr" / names[key], outcome.lr)
            for method, image in outcome.results.items():
                write_picture(out / method / names[key], image)
        except MissingWeightsError:
            raise
        except Exception as error:
            if debug:
                raise
            message = str(error) if isinstance(error, YodaError) else f"{type(error).__name__}: {error}"
            typer.echo(f"yoda-sr: error: {message if str(path) in message else f'{path}: {message}'}", err=True)
            failures += 1
            continue
        records.extend(outcome.records)
        if len(grid) < GRID_ROWS:
            grid.append(grid_row(outcome, scale))
        if not quiet:
            scores = ", ".join(f"{r.method} {r.psnr_y:.2f} dB / {r.ssim_y:.4f}" for r in outcome.records)
            typer.echo(f"yoda-sr: [{index}/{len(found)}] {key}: PSNR-Y / SSIM-Y {scores}", err=True)
    elapsed = time.perf_counter() - start
    evaluated = len(found) - failures
    if not evaluated:
        raise YodaError(f"none of the {len(found)} image(s) could be evaluated")

    means = summarize(records, methods)
    summary = {
        "model": upscaler.name,
        "model_sha256": upscaler.loaded.sha256,
        "yoda_sr_version": __version__,
        "data": str(data),
        "images": evaluated,
        "failed": failures,
        "compare": methods,
        "settings": {
            "scale": scale,
            "steps": settings.steps,
            "sampler": settings.sampler,
            "eta": settings.eta,
            "attention": settings.attention,
            "lower_bound": settings.lower_bound,
            "seed": seed,
            "border": scale,
            "lr": "bicubic (a = -0.5, antialiased), 8-bit",
        },
        "device": str(upscaler.device),
        "dtype": str(upscaler.dtype).removeprefix("torch."),
        "lpips": {"computed": lpips_model is not None, "note": lpips_note},
        "seconds_per_image": elapsed / evaluated,
        "methods": {
            method: {name: _json_number(value) for name, value in entry.items()} for method, entry in means.items()
        },
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / "per_image.csv", per_image_csv(records))
    _write_text(out / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    write_picture(out / "grid.png", make_grid(grid))
    for line in markdown_table(means):
        typer.echo(line)
    if lpips_model is None:
        typer.echo(lpips_note)
    if failures:
        raise typer.Exit(1)
