"""ResShift against the SRDiff default on whole photos: the comparison of issue 15. Prints a Markdown table.

For every photo of ``--val`` (the default model's validation split) and two photos no model trained
or was tuned on (matplotlib's grace_hopper, scikit-image's stereo_motorcycle left view), and every
seed, each method runs on the same 8-bit bicubic LR as ``yoda-sr evaluate`` makes it (per-image seed
from the seed and the file name), one after the other so timings interleave:

- ``bicubic``; ``base``: a model's regression output alone (its known region, no diffusion), for
  the SRDiff default and for the ResShift model;
- ``srdiff-yoda``: the default model with its default settings;
- ``resshift-plain-N`` and ``resshift-yoda-N`` for each N of ``--steps`` (YODA with ``--attention``
  and ``--lower-bound``).

Metrics: PSNR-Y and SSIM-Y (``metrics.image_metrics``, border 4), seconds per image (the whole
``Upscaler.upscale`` call, attention map included), the pixel-update fraction against plain
sampling on the same steps, and "updates": steps x that fraction, the mean number of denoiser
updates a pixel gets. Rows go to OUT/rows.csv and every output to OUT/<method>/<seed>/; a rerun
computes only what is missing. LPIPS-VGG is computed by the ``lpips`` command where ``yoda_sr.evaluation.metrics``
offers it (``Lpips("vgg")``) into OUT/lpips.csv, which ``table`` reads.

    python bench/resshift.py run --resshift runs/yoda-resshift-x4 --seeds 0,1,2 --out bench-out/resshift
    python bench/resshift.py lpips --out bench-out/resshift
    python bench/resshift.py table --out bench-out/resshift
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

FIELDS = ["set", "image", "seed", "method", "psnr_y", "ssim_y", "seconds", "steps", "update_fraction"]


def unseen_photos(folder: Path) -> list[Path]:
    """grace_hopper and stereo_motorcycle (left view) as PNG files in ``folder``."""
    import matplotlib.cbook
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        hopper = np.asarray(Image.open(handle).convert("RGB"))
    photos = {"grace_hopper": hopper, "stereo_motorcycle": data.stereo_motorcycle()[0]}
    paths = []
    for name, image in photos.items():
        path = folder / f"{name}.png"
        if not path.exists():
            Image.fromarray(np.ascontiguousarray(image[..., :3])).save(path)
        paths.append(path)
    return paths


def run(args: argparse.Namespace) -> None:
    from yoda_sr.api import Settings, Upscaler
    from yoda_sr.evaluation.baselines import bicubic_upscale, degrade, ground_truth, regression_base
    from yoda_sr.evaluation.metrics import image_metrics
    from yoda_sr.image.io import read_picture, write_picture
    from yoda_sr.seeds import derive_seed

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sets = set(args.sets.split(","))
    photos = [("val", path) for path in sorted(Path(args.val).glob("*.png"))] if "val" in sets else []
    if "unseen" in sets:
        photos += [("unseen", path) for path in unseen_photos(out / "unseen-photos")]
    srdiff = Upscaler.from_pretrained(args.srdiff, device="cpu", dtype="fp32")
    resshift = Upscaler.from_pretrained(args.resshift, device="cpu", dtype="fp32")
    steps = [int(n) for n in args.steps.split(",")]
    methods: list[tuple[str, object, Settings | None]] = [
        ("bicubic", None, None),
        ("base-srdiff", srdiff, None),
        ("base-resshift", resshift, None),
        ("srdiff-yoda", srdiff, Settings()),
    ]
    for n in steps:
        methods.append((f"resshift-plain-{n}", resshift, Settings(steps=n, attention="none")))
        yoda = Settings(steps=n, attention=args.attention, lower_bound=args.lower_bound)
        methods.append((f"resshift-yoda-{n}", resshift, yoda))
    rows_file = out / "rows.csv"
    done = set()
    if rows_file.exists():
        with rows_file.open() as handle:
            done = {(r["image"], r["seed"], r["method"]) for r in csv.DictReader(handle)}
    else:
        rows_file.write_text(",".join(FIELDS) + "\n")
    for seed in (int(s) for s in args.seeds.split(",")):
        for which, path in photos:
            hr = ground_truth(read_picture(path).rgb, 4)
            lr = degrade(hr, 4)
            image_seed = derive_seed(seed, path.name)
            for method, upscaler, settings in methods:
                if (path.name, str(seed), method) in done:
                    continue
                start = time.perf_counter()
                fraction, count = math.nan, 0
                if upscaler is None:
                    sr = bicubic_upscale(lr, hr.shape[:2])
                elif settings is None:
                    sr = regression_base(upscaler, lr, 4)
                else:
                    result = upscaler.upscale(lr, seed=image_seed, settings=settings)
                    sr, fraction, count = result.image, result.update_fraction, result.steps
                seconds = time.perf_counter() - start
                scores = image_metrics(sr, hr, 4)
                write_picture(out / method / str(seed) / path.name, sr)
                row = [which, path.name, seed, method, scores["psnr_y"], scores["ssim_y"], seconds, count, fraction]
                with rows_file.open("a") as handle:
                    handle.write(",".join(str(value) for value in row) + "\n")
                print(
                    f"{which} {path.name} seed {seed} {method}: {scores['psnr_y']:.2f} dB, {seconds:.1f} s", flush=True
                )


def lpips(args: argparse.Namespace) -> None:
    """LPIPS-VGG of every saved output against its ground truth, into OUT/lpips.csv."""
    from yoda_sr.evaluation.baselines import ground_truth
    from yoda_sr.evaluation.metrics import Lpips, crop_border
    from yoda_sr.image.io import read_picture

    out = Path(args.out)
    metric = Lpips("vgg", "cpu")
    with (out / "rows.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    sources = {p.name: p for p in [*Path(args.val).glob("*.png"), *(out / "unseen-photos").glob("*.png")]}
    known: dict[tuple[str, str, str], float] = {}
    lpips_file = out / "lpips.csv"
    if lpips_file.exists():
        with lpips_file.open() as handle:
            known = {(r["image"], r["seed"], r["method"]): float(r["lpips_vgg"]) for r in csv.DictReader(handle)}
    truths: dict[str, np.ndarray] = {}
    for row in rows:
        key = (row["image"], row["seed"], row["method"])
        if key in known:
            continue
        if row["image"] not in truths:
            truths[row["image"]] = crop_border(ground_truth(read_picture(sources[row["image"]]).rgb, 4), 4)
        sr = crop_border(read_picture(out / row["method"] / row["seed"] / row["image"]).rgb, 4)
        known[key] = metric(sr, truths[row["image"]])
        print(f"{key}: {known[key]:.4f}", flush=True)
    lines = ["image,seed,method,lpips_vgg", *(f"{i},{s},{m},{v}" for (i, s, m), v in sorted(known.items()))]
    lpips_file.write_text("\n".join(lines) + "\n")


def table(args: argparse.Namespace) -> None:
    out = Path(args.out)
    with (out / "rows.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    distances: dict[tuple[str, str, str], float] = {}
    if (out / "lpips.csv").exists():
        with (out / "lpips.csv").open() as handle:
            distances = {(r["image"], r["seed"], r["method"]): float(r["lpips_vgg"]) for r in csv.DictReader(handle)}
    methods = list(dict.fromkeys(row["method"] for row in rows))
    for which in ("val", "unseen"):
        images = sorted({row["image"] for row in rows if row["set"] == which})
        seeds = sorted({row["seed"] for row in rows if row["set"] == which})
        if not images:
            continue
        print(f"\n{which}: {len(images)} photos x {len(seeds)} seeds ({', '.join(images)})\n")
        print("| method | PSNR-Y | SSIM-Y | LPIPS-VGG | s / image | pixel updates | updates / pixel |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for method in methods:
            chosen = [row for row in rows if row["set"] == which and row["method"] == method]
            if len(chosen) != len(images) * len(seeds):
                continue
            per_seed = defaultdict(list)
            for row in chosen:
                per_seed[row["seed"]].append(float(row["psnr_y"]))
            spread = np.std([np.mean(v) for v in per_seed.values()]) if len(per_seed) > 1 else 0.0
            psnr = np.mean([float(r["psnr_y"]) for r in chosen])
            ssim = np.mean([float(r["ssim_y"]) for r in chosen])
            seconds = np.mean([float(r["seconds"]) for r in chosen])
            keys = [(r["image"], r["seed"], r["method"]) for r in chosen]
            lp = f"{np.mean([distances[k] for k in keys]):.4f}" if all(k in distances for k in keys) else "-"
            fraction = np.mean([float(r["update_fraction"]) for r in chosen])
            updates = np.mean([float(r["update_fraction"]) * int(r["steps"]) for r in chosen])
            frac_text = "-" if math.isnan(fraction) else f"{fraction:.3f}"
            upd_text = "-" if math.isnan(updates) else f"{updates:.2f}"
            spread_text = f" ± {spread:.2f}" if spread > 0 else ""
            print(
                f"| {method} | {psnr:.2f}{spread_text} | {ssim:.4f} | {lp} | {seconds:.2f} | {frac_text} | {upd_text} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("run", "lpips", "table"))
    parser.add_argument("--out", default="bench-out/resshift")
    parser.add_argument("--val", default="data/photos/val")
    parser.add_argument("--srdiff", default="yoda-srdiff-x4")
    parser.add_argument("--resshift", default="runs/yoda-resshift-x4")
    parser.add_argument("--steps", default="4,8,15")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--attention", default="sift")
    parser.add_argument("--lower-bound", type=float, default=0.0)
    parser.add_argument(
        "--sets", default="val,unseen", help="Photo sets: val (the --val folder), unseen (the two never-seen photos)."
    )
    args = parser.parse_args()
    {"run": run, "lpips": lpips, "table": table}[args.command](args)


if __name__ == "__main__":
    main()
