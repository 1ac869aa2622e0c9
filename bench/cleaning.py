"""LR cleaning (``restoration.clean``): what it finds, what it gains, and what it costs. Prints a Markdown table.

For each photo (scikit-image's colour photos by default, or the PNG/JPEG files of ``--data``) the
HR is downscaled 4x with the project's bicubic, the LR degraded (none, noise, JPEG, both), and
``clean`` run on it: the table gives how many were judged JPEG / noisy / clean, the mean quality or
sigma found, the LR's PSNR against the clean LR before and after, and the seconds per image (the
whole ``clean`` call, detection included; best of ``--repeats``).

    python bench/cleaning.py [--data DIR] [--degrade none,noise:5,jpeg:60,jpeg:90,noise:5,jpeg:60]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from yoda_sr.evaluation.baselines import degrade, ground_truth
from yoda_sr.evaluation.metrics import psnr
from yoda_sr.image.degradations import Degradation
from yoda_sr.image.restoration import clean

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


def photos(folder: Path | None) -> dict[str, np.ndarray]:
    from PIL import Image

    if folder is not None:
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        return {p.stem: np.asarray(Image.open(p).convert("RGB")) for p in paths}
    from skimage import data

    return {name: getattr(data, name)()[..., :3] for name in PHOTOS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="A folder of HR photos (default: scikit-image's).")
    parser.add_argument("--degrade", default="none;noise:2;noise:5;noise:10;jpeg:40;jpeg:60;jpeg:90;noise:5,jpeg:60")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    images = {name: degrade(ground_truth(rgb, 4), 4) for name, rgb in photos(args.data).items()}
    sizes = sorted({f"{lr.shape[1]}x{lr.shape[0]}" for lr in images.values()})
    print(f"{len(images)} photos, LR {', '.join(sizes)}; seed 0 for the noise\n")
    print("| LR | judged JPEG / noisy / clean | found (mean) | LR PSNR before | after | s / image |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for spec in args.degrade.split(";"):
        degradation = Degradation.parse(spec)
        kinds = {"jpeg": 0, "noise": 0, "none": 0}
        levels: dict[str, list[float]] = {"jpeg": [], "noise": []}
        before, after, seconds = [], [], []
        for lr in images.values():
            degraded = degradation.apply(lr, np.random.default_rng(0))
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                cleaned, done = clean(degraded)
                best = min(best, time.perf_counter() - start)
            seconds.append(best)
            kinds[done.kind] += 1
            if done.kind != "none":
                levels[done.kind].append(done.level)
            before.append(psnr(degraded.astype(np.float64), lr.astype(np.float64)))
            after.append(psnr(cleaned.astype(np.float64), lr.astype(np.float64)))
        found = ", ".join(
            f"{'q' if kind == 'jpeg' else 'sigma '}{np.mean(values):.1f}" for kind, values in levels.items() if values
        )
        pairs = [(b, a) for b, a in zip(before, after, strict=True) if np.isfinite(b)]
        means = [f"{np.mean(column):.2f}" for column in zip(*pairs, strict=True)]
        shown = means if pairs else ["identical", "-"]
        print(
            f"| {degradation.label()} | {kinds['jpeg']} / {kinds['noise']} / {kinds['none']} | {found or '-'} "
            f"| {shown[0]} | {shown[1]} | {np.mean(seconds):.2f} |"
        )


if __name__ == "__main__":
    main()
