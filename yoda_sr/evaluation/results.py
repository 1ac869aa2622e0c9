"""The results of an evaluation as numbers and text: per-method means, a Markdown table, per-image
CSV, and whether a results folder holds the same evaluation (its pictures: ``pictures``)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SettingError, setting

METRICS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "lpips_vgg", "lpips_alex")
LPIPS_COLUMNS = {"vgg": "LPIPS-VGG", "alex": "LPIPS-Alex"}
CSV_FIELDS = ("image", "method", *METRICS, "update_fraction", "seconds", "cleaned", "model")


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
    cleaned: str | None = None
    """What the LR cleaning found and did before this method (``Cleaning.describe``: "JPEG q60
    deblocked", "noise sigma 5.1 removed", "none" when it found neither; "off" under clean off);
    None for bicubic, which gets the LR as it is, and in results from before it was recorded."""
    model: str | None = None
    """The model that made a model method's image: the photo model where the cleaning changed the LR
    (``Settings.photo_model``); None for bicubic and peers."""


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


def json_number(value: float | None) -> float | None:
    """JSON has no infinity or NaN: those become null."""
    return value if value is None or math.isfinite(value) else None


IDENTITY = (
    "model_sha256", "data", "scale", "steps", "sampler", "eta", "attention", "lower_bound", "flat_floor", "clean",
    "photo_model", "seed", "dtype", "degrade", "sparse", "block", "peers",
)  # fmt: skip
"""What makes two evaluations the same: results computed under one can stand in for the other's."""


def identity(content: dict[str, Any]) -> dict[str, Any]:
    """The :data:`IDENTITY` values of a summary.json's content (None where missing)."""
    settings = content.get("settings")
    flat = {
        **(settings if isinstance(settings, dict) else {}),
        **{key: content.get(key) for key in ("model_sha256", "data", "dtype")},
    }
    flat.setdefault("degrade", "none")  # evaluations from before the degrade setting had clean LR
    flat.setdefault("flat_floor", 0.0)  # and before flat_floor, no flat areas were kept
    flat.setdefault("clean", "off")  # and before clean, the LR went in as it was
    flat.setdefault("photo_model", "off")  # and before photo models, the model upscaled every LR
    flat.setdefault("sparse", True)  # and before sparse and block were recorded, the defaults ran
    flat.setdefault("block", "auto")
    peers = flat.get("peers")
    peers = peers if isinstance(peers, dict) else {}  # and before peers were recorded, there were none
    flat["peers"] = {name: entry.get("sha256") if isinstance(entry, dict) else None for name, entry in peers.items()}
    return {key: flat.get(key) for key in IDENTITY}


def differences(theirs: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    """How two identities differ, as "KEY THEIRS there, OURS here" (data compared as resolved paths)."""
    found = []
    for key in IDENTITY:
        a, b = theirs.get(key), ours.get(key)
        if key == "block" and "auto" in (a, b) and theirs.get("sparse") == ours.get("sparse") is True:
            continue  # an evaluation that did not record its block ran the default one
        if key == "peers":  # a peer added or left out is a method more or less, as bicubic would be
            there, here = a or {}, b or {}
            changed = sorted(name for name in set(there) & set(here) if there[name] != here[name])
            found += [f"{name} sha256 {str(there[name])[:12]} there, {str(here[name])[:12]} here" for name in changed]
            continue
        if key == "data" and isinstance(a, str) and isinstance(b, str):
            same = Path(a).resolve() == Path(b).resolve()
        else:
            same = a == b
        if not same:
            if key == "model_sha256":
                a, b = str(a)[:12], str(b)[:12]
            found.append(f"{key} {a} there, {b} here")
    return found


def read_records(path: Path) -> list[Record]:
    """The records of a per_image.csv written by :func:`per_image_csv`; rows that do not parse are
    left out (their images are evaluated again)."""
    names = [item.name for item in dataclasses.fields(Record)]
    records = []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    for row in rows:
        try:
            values: dict[str, Any] = {name: row.get(name) or None for name in names}
            for name in names[2:]:
                if name not in ("cleaned", "model"):
                    values[name] = None if values[name] is None else float(values[name])
            if values["image"] is None or values["method"] is None or values["seconds"] is None:
                continue
            records.append(Record(**values))
        except (TypeError, ValueError):
            continue
    return records


def output_names(keys: list[str]) -> dict[str, Path]:
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


def default_out(model_name: str) -> Path:
    """The results folder when none is given: ./eval_<model name>."""
    return Path(f"eval_{re.sub(r'[^A-Za-z0-9._-]+', '_', model_name)}")


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse a results folder that is a file, or a non-empty folder that holds no evaluation
    (unless ``overwrite``); one that holds an evaluation is checked by :func:`previous_records`."""
    if out.exists() and not out.is_dir():
        raise SettingError("out", f"{out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite and not (out / "summary.json").is_file():
        raise SettingError(
            "out",
            f"{out} is not empty and holds no evaluation (no summary.json); choose another folder, or write "
            f"into it anyway ({setting('overwrite')})",
        )


def previous_records(out: Path, ours: dict[str, Any]) -> list[Record]:
    """The records of the evaluation already in ``out`` if it is the same evaluation as ``ours``
    (summary.json content); SettingError if ``out`` holds a different or unreadable one."""
    summary = out / "summary.json"
    if not summary.is_file():
        return []
    try:
        content = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        content = error
    if not isinstance(content, dict):
        raise SettingError(
            "out",
            f"{summary} is not a yoda-sr evaluation; choose another folder, or overwrite it ({setting('overwrite')})",
        )
    changed = differences(identity(content), identity(ours))
    if changed:
        raise SettingError(
            "out",
            f"{out} holds a different evaluation ({'; '.join(changed)}); choose another folder, or "
            f"overwrite it ({setting('overwrite')})",
        )
    return read_records(out / "per_image.csv")


MEASURED = (
    "measured with the default model on 4 held-out crops: plain DDPM sampling is 7.9 dB below bicubic at 1 step, "
    "2.1 dB at 2 and 0.8 dB above it at 3; plain DDIM stays below bicubic up to 20 steps (bench/plain_steps.py)"
)
"""What bench/plain_steps.py measured (4 held-out 192-px crops, 4x, 2-core CPU), cited by :func:`explain`."""


def explain(means: dict[str, dict[str, float | None]], steps: int, sampler: str, default_steps: int) -> list[str]:
    """One line per diffusion method whose mean PSNR-Y is below bicubic's, with the likely cause:
    too few steps (at most 2, or fewer than the model's default), plain DDIM sampling, plain
    diffusion alone (yoda above bicubic), or a model that does not improve on bicubic here."""
    scores = {method: entry.get("psnr_y") for method, entry in means.items()}
    bicubic = scores.get("bicubic")
    if bicubic is None or not math.isfinite(bicubic):
        return []
    below = {method: bicubic - score for method, score in scores.items() if score is not None and score < bicubic}
    lines = []
    for method, gap in below.items():
        start = f"note: {method} scores {gap:.2f} dB below bicubic (PSNR-Y)"
        if sampler == "resshift":  # its chain starts from the base plus noise: no pure-noise start to blame
            lines.append(
                f"{start} with {steps} ResShift step(s) (this model's default is {default_steps}): the model does not "
                "improve on bicubic for these images; check that its weights are trained, for this scale and this "
                "kind of image"
            )
        elif steps <= 2 or steps < default_steps:
            lines.append(
                f"{start}: {steps} {sampler} step(s) are likely too few (this model's default is {default_steps}). "
                f"Diffusion starts from pure noise, and its first predictions of the image are poor until later "
                f"steps correct them ({MEASURED}); evaluate with more steps"
            )
        elif method == "plain" and sampler == "ddim":
            lines.append(
                f"{start} with {steps} DDIM steps: deterministic DDIM sampling of every pixel can stay below bicubic "
                f"at any step count ({MEASURED}); compare with DDPM sampling"
            )
        elif method == "plain" and "yoda" in scores and "yoda" not in below:
            lines.append(
                f"{start} and yoda does not: this model improves on bicubic only where its attention map sends the "
                "diffusion (a model trained with YODA masks and no plain samples, plain_fraction = 0, has never "
                "seen plain diffusion's inputs; docs/method.md §6)"
            )
        else:
            lines.append(
                f"{start} at {steps} steps: the model does not improve on bicubic for these images with {method} "
                "sampling; check that its weights are trained, for this scale and this kind of image"
            )
    return lines
