"""Images per minute on Ray against the plain CLI, on the same images, and the Ray driver's overhead.

Makes ``--images`` crops (``--size`` px, from the bundled sample photo) and upscales them with the
embedded default model at its defaults three ways, each into a fresh folder:

- ``cli``: `yoda-sr upscale DIR -o OUT` in a child process (torch's default threads: one per core),
  and ``cli 1 thread`` (OMP_NUM_THREADS=1, as each Ray worker of one CPU runs);
- ``ray xN``: ``yoda_sr.distributed.upscale_on_ray`` with N workers of one CPU (one thread) each, on
  a Ray this script starts on 127.0.0.1 and stops for every run.

For each: wall seconds (start-up included: the interpreter, Ray, the workers' model loads), images
per minute over the wall time, images per minute once working (the outputs' modification times: N - 1
images between the first and the last written), the mean per-image seconds the run log records, and
for Ray the driver's own time per image (claims, sending, records; not waiting for Ray). Compares
every run's outputs with ``cli 1 thread``'s (same bytes expected at the same thread count; across
thread counts float sums run in another order). Prints a Markdown table, and the arithmetic for GPUs.

    python bench/scale_out.py [--images 8] [--size 64] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_images(folder: Path, count: int, size: int) -> None:
    """``count`` crops of the bundled 128 px sample photo, at different offsets."""
    from importlib import resources

    import numpy as np
    from PIL import Image

    with Image.open(resources.files("yoda_sr") / "samples/astronaut.png") as sample:
        photo = np.asarray(sample.convert("RGB"))
    folder.mkdir(parents=True)
    span = photo.shape[0] - size
    for index in range(count):
        top, left = (index * 37) % (span + 1), (index * 53) % (span + 1)
        Image.fromarray(np.ascontiguousarray(photo[top : top + size, left : left + size])).save(
            folder / f"crop{index}.png"
        )


def difference(folder: Path, reference: Path) -> str:
    """ "same bytes", or the largest difference in 8-bit levels and the share of values that differ."""
    import numpy as np
    from PIL import Image

    names = sorted(path.name for path in reference.glob("*.png"))
    if all((folder / name).read_bytes() == (reference / name).read_bytes() for name in names):
        return "same bytes"
    largest, differing, total = 0, 0, 0
    for name in names:
        with Image.open(folder / name) as one, Image.open(reference / name) as other:
            gap = np.abs(np.asarray(one, dtype=np.int32) - np.asarray(other, dtype=np.int32))
        largest, differing, total = max(largest, int(gap.max())), differing + int((gap > 0).sum()), total + gap.size
    return f"<= {largest} level, {100 * differing / total:.4f} % of values"


def steady(folder: Path) -> float:
    """Images per minute between the first and the last output written."""
    times = sorted(path.stat().st_mtime_ns for path in folder.glob("*.png"))
    return 60e9 * (len(times) - 1) / (times[-1] - times[0])


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "yoda-sr-upscale.jsonl").read_text().splitlines()]


def run_cli(images: Path, out: Path, threads: int | None = None) -> dict:
    started = time.perf_counter()
    command = [sys.executable, "-m", "yoda_sr", "upscale", str(images), "-o", str(out), "-q"]
    environ = dict(os.environ) if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(command, check=True, env=environ)
    wall = time.perf_counter() - started
    seconds = [record["seconds"] for record in records(out)]
    return {"wall": wall, "steady": steady(out), "per_image": sum(seconds) / len(seconds), "driver": None}


def run_ray(images: Path, out: Path, workers: int) -> dict:
    from yoda_sr.distributed import RayOptions, upscale_on_ray

    started = time.perf_counter()
    report = upscale_on_ray([images], out, options=RayOptions(workers=workers))
    wall = time.perf_counter() - started
    if report.failures:
        raise SystemExit("\n".join(report.failures))
    seconds = [record["seconds"] for record in records(out)]
    done = report.tally.done
    return {
        "wall": wall,
        "steady": steady(out),
        "per_image": sum(seconds) / len(seconds),
        "driver": report.driver_seconds / done,
        "startup": report.startup_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="LR side in pixels (at most 128)")
    parser.add_argument("--workers", default="1,2", help="Ray worker counts, comma-separated")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="yoda-scale-out-"))
    images = root / "images"
    make_images(images, args.images, args.size)
    folders = {"cli": root / "cli", "cli 1 thread": root / "cli-1"}
    runs = {"cli": run_cli(images, folders["cli"]), "cli 1 thread": run_cli(images, folders["cli 1 thread"], 1)}
    for workers in (int(text) for text in args.workers.split(",")):
        name = f"ray x{workers}"
        folders[name] = root / f"ray-{workers}"
        runs[name] = run_ray(images, folders[name], workers)
    count = args.images
    print(
        f"\n{count} images, {args.size} -> {4 * args.size} px, embedded default model at its defaults; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end\n"
    )
    print(
        "| run | wall s | images / min (wall) | images / min (working) | s / image (run log) | driver ms / image "
        "| outputs vs cli 1 thread |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, run in runs.items():
        driver = "-" if run["driver"] is None else f"{1000 * run['driver']:.1f}"
        print(
            f"| {name} | {run['wall']:.1f} | {60 * count / run['wall']:.1f} | {run['steady']:.1f} "
            f"| {run['per_image']:.2f} | {driver} | {difference(folders[name], folders['cli 1 thread'])} |"
        )
    ray_runs = [run for name, run in runs.items() if name.startswith("ray")]
    if ray_runs:
        driver = max(run["driver"] for run in ray_runs)
        startup = max(run["startup"] for run in ray_runs)
        per_image = runs["cli 1 thread"]["per_image"]
        print(
            f"\nRay start-up (Ray and the first worker's model): up to {startup:.1f} s. Arithmetic, not a "
            f"measurement: one worker finishes 60 / t images a minute, t its per-image seconds (here, one "
            f"CPU thread: {per_image:.2f} s, {60 / per_image:.0f} / min); a driver that spends {1000 * driver:.1f} ms "
            f"per image feeds at most {1 / driver:.0f} images / s, so it keeps up with G GPUs while "
            f"G < t_gpu x {1 / driver:.0f} (t_gpu: a GPU's per-image seconds)."
        )


if __name__ == "__main__":
    main()
