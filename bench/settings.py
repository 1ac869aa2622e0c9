"""Sampling settings of one model side by side on whole photos: the fidelity / detail table of its card.

For every photo of each ``--data`` folder, every seed and every LR condition (``--degrade``, as
``yoda-sr evaluate --degrade`` makes it), the method rows are computed on the same 8-bit LR with the
same per-image seed as ``yoda-sr evaluate`` (``evaluation.Evaluation``): ``bicubic`` and ``base`` once,
then each setting of ``--settings`` (``STEPS/SAMPLER/ATTENTION/L``, or ``.../L/FLAT`` with a
flat-area floor as ``--flat-floor``, else 0; attention ``none`` is plain diffusion), one after the
other on each image so that timings interleave. Metrics: PSNR-Y and SSIM-Y
(border 4), LPIPS-VGG and LPIPS-Alex where their weights are installed, the pixel-update fraction and
the seconds of the whole ``Upscaler.upscale`` call (attention map included). Rows go to OUT/rows.csv;
a rerun computes only what is missing, and ``--table`` prints the means without computing.

    python bench/settings.py --model yoda-srdiff-x4 --data data/photos/val --seeds 0,1,2 \\
        --settings 5/ddpm/none/0,5/ddpm/sift/0,5/ddpm/edge/0.3 --out bench-out/settings
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

FIELDS = ["set", "degrade", "image", "seed", "method", "psnr_y", "ssim_y", "lpips_vgg", "lpips_alex"]
FIELDS += ["update_fraction", "seconds"]


Setting = tuple[int, str, str, float, float]


def parse_setting(text: str) -> Setting:
    steps, sampler, attention, lower, *flat = text.split("/")
    return int(steps), sampler, attention, float(lower), float(flat[0]) if flat else 0.0


def label(setting: Setting) -> str:
    steps, sampler, attention, lower, flat = setting
    if attention == "none":
        return f"plain {steps} {sampler}"
    return f"yoda {steps} {sampler} {attention} l={lower:g}" + (f" flat={flat:g}" if flat else "")


def run(args: argparse.Namespace) -> None:
    from yoda_sr.api import Settings, Upscaler
    from yoda_sr.evaluation.core import Evaluation
    from yoda_sr.evaluation.metrics import load_lpips_models
    from yoda_sr.image.degradations import Degradation
    from yoda_sr.image.io import read_picture

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.csv"
    done: set[tuple[str, ...]] = set()
    if rows_path.exists():
        with open(rows_path, newline="") as handle:
            done = {(r["set"], r["degrade"], r["image"], r["seed"], r["method"]) for r in csv.DictReader(handle)}
    upscaler = Upscaler.from_pretrained(args.model, device="cpu")
    lpips, note = load_lpips_models("cpu")
    if note:
        print(note)
    settings = [parse_setting(text) for text in args.settings.split(",")]
    seeds = [int(seed) for seed in args.seeds.split(",")]
    degradations = [Degradation.parse(text) for text in args.degrade.split(";")]
    methods: list[tuple[str, Setting | None]] = [("bicubic", None), ("base", None)]
    methods += [(label(setting), setting) for setting in settings]
    photos = [
        (Path(folder).name, path)
        for folder in args.data
        for path in sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg"))
    ]
    pictures: dict[Path, np.ndarray] = {}
    new_file = not rows_path.exists()
    with open(rows_path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        if new_file:
            writer.writeheader()
        # One image at a time, every setting on it in turn, so that timings interleave; bicubic and
        # base do not depend on the seed and run with the first one only.
        for (name, path), degradation, seed, (method, setting) in itertools.product(
            photos, degradations, seeds, methods
        ):
            key = (name, degradation.label(), path.name, str(seed), method)
            if key in done or (setting is None and seed != seeds[0]):
                continue
            wanted = Settings()
            if setting is not None:
                steps, sampler, attention, lower, flat = setting
                wanted = Settings(steps=steps, sampler=sampler, attention=attention, lower_bound=lower, flat_floor=flat)
            evaluation = Evaluation(
                upscaler, ["yoda"], upscaler.resolve(wanted), upscaler.scale, seed, lpips, degradation
            )
            if path not in pictures:
                pictures[path] = read_picture(path).rgb
            record = evaluation.image(pictures[path], path.name, [method if setting is None else "yoda"]).records[0]
            row = dict(zip(FIELDS[:5], key, strict=True))
            row.update(
                psnr_y=record.psnr_y,
                ssim_y=record.ssim_y,
                lpips_vgg=record.lpips_vgg,
                lpips_alex=record.lpips_alex,
                update_fraction=record.update_fraction,
                seconds=record.seconds,
            )
            writer.writerow(row)
            handle.flush()
            print(", ".join(f"{k}={v}" for k, v in row.items()), flush=True)


def table(args: argparse.Namespace) -> None:
    with open(Path(args.out) / "rows.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    groups: dict[tuple[str, str], dict[str, list[dict[str, str]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        groups[(row["set"], row["degrade"])][row["method"]].append(row)

    def mean(values: list[str]) -> float:
        numbers = [float(v) for v in values if v not in ("", "None")]
        return float(np.mean(numbers)) if numbers else math.nan

    for (name, degrade), methods in groups.items():
        images = sorted({row["image"] for rows in methods.values() for row in rows})
        seeds = sorted({row["seed"] for rows in methods.values() for row in rows})
        print(f"\n{name}, LR {degrade}: {len(images)} photos, seeds {', '.join(seeds)}\n")
        print("| method | PSNR-Y | SSIM-Y | LPIPS-VGG | LPIPS-Alex | pixel updates | s / image | images x seeds |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for method, entries in methods.items():
            fraction = mean([e["update_fraction"] for e in entries])
            print(
                f"| {method} | {mean([e['psnr_y'] for e in entries]):.2f} | {mean([e['ssim_y'] for e in entries]):.4f}"
                f" | {mean([e['lpips_vgg'] for e in entries]):.4f} | {mean([e['lpips_alex'] for e in entries]):.4f}"
                f" | {'-' if math.isnan(fraction) else f'{fraction:.3f}'}"
                f" | {mean([e['seconds'] for e in entries]):.2f} | {len(entries)} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="yoda-srdiff-x4")
    parser.add_argument("--data", nargs="+", default=["data/photos/val"], help="Folders of HR photos (one set each).")
    parser.add_argument("--settings", default="5/ddpm/none/0,5/ddpm/sift/0", help="STEPS/SAMPLER/ATTENTION/L, ...")
    parser.add_argument("--degrade", default="none", help="LR conditions, ';'-separated (e.g. 'none;jpeg:60;noise:5').")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--out", default="bench-out/settings")
    parser.add_argument("--table", action="store_true", help="Only print the table of what OUT/rows.csv holds.")
    args = parser.parse_args()
    if not args.table:
        run(args)
    table(args)


if __name__ == "__main__":
    main()
