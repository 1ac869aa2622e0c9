"""The CPU fast path, feature by feature: each variant as a ratio against the plain path.

Every variant runs in a fresh child process (process settings such as the allocator and OpenMP's
wait policy can only be chosen at start), and the variants take turns, round after round, so slow
and fast phases of a shared machine fall on all of them alike. Each child times denoiser calls of
the default model at ``--call-size`` (per call) and whole ``Upscaler.upscale`` runs at the model's
defaults (per image; the first run of each image in the process, as a one-image command runs it,
except with --compile, which compiles on an untimed first run), and saves its outputs; the table gives
medians over the rounds, ratios against the plain path, and the largest difference of each output
from the plain path's, in 8-bit levels.

The plain path is the library with every fast-path feature switched off, which is what `main` ran
before the fast path: the model's weights in PyTorch's default layout, upstream's written-out Mish,
the previous tile plan (``old_plan_tiles`` below: equal steps of the full tile side), no allocator
settings, and OpenMP's default wait policy. ``--baseline DIR`` adds a row for another checkout of
yoda-sr (e.g. a worktree of an older commit), run with the same images and seeds.

    python bench/cpu.py [--rounds 3] [--calls 3] [--call-size 256] [--compile] [--baseline DIR]
                        [--variants plain,channels_last,mish,allocator,passive,tiles,fast]
                        [--images sample,photo] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "plain": (),
    "channels_last": ("channels_last",),
    "mish": ("mish",),
    "allocator": ("allocator",),
    "passive": ("passive",),
    "tiles": ("tiles",),
    "fast": ("channels_last", "mish", "allocator", "tiles"),
    "fast+compile": ("channels_last", "mish", "allocator", "tiles", "compile"),
    "fast-no-yoda": ("channels_last", "mish", "allocator", "tiles", "no-attention"),
    "fast-dense": ("channels_last", "mish", "allocator", "tiles", "no-sparse"),
}
"""Variant name -> the fast-path features it switches on ("fast" is what the CLI does by default)."""
DESCRIPTIONS = {
    "plain": "every feature off (the path before the fast path)",
    "channels_last": "denoiser and encoder weights channels-last",
    "mish": "Mish with one exponential, in cache-sized chunks",
    "allocator": "glibc mallopt: freed memory is reused",
    "passive": "OMP_WAIT_POLICY=PASSIVE (measured, not applied by the CLI)",
    "tiles": "tile plan with the fewest processed pixels",
    "fast": "channels_last, mish, allocator and tiles (the CLI's defaults)",
    "fast+compile": "all of the above and --compile",
    "fast-no-yoda": "fast, with --attention none: plain diffusion at the same steps (diff: another method)",
    "fast-dense": "fast, with --sparse off: dense masked sampling on the pixel-level map (diff: another mask)",
    "baseline": "another checkout (--baseline), at its defaults",
}


def images(which: str = "sample,photo") -> dict[str, object]:
    """The bundled sample photo (128 x 128 -> 512 x 512) and a 256 x 256 photo crop (-> 1024 x 1024)."""
    import numpy as np
    from PIL import Image
    from skimage import data

    sample = Path(__file__).resolve().parents[1] / "yoda_sr" / "samples" / "astronaut.png"
    with Image.open(sample) as opened:
        small = np.asarray(opened.convert("RGB"))
    found = {"sample 128": small, "photo 256": np.ascontiguousarray(data.coffee()[100:356, 200:456])}
    return {name: image for name, image in found.items() if name.split()[0] in which.split(",")}


def old_plan_tiles(height: int, width: int, tile: int, overlap: int, multiple: int = 1, align: int = 1) -> list:
    """The tile plan before the fast path: tiles of the full side, spread evenly (a third tile of
    512 px for a 1024 px side at a 32 px overlap)."""
    from yoda_sr.runtime.tiling import Tile

    def starts(length: int) -> list[int]:
        if length <= tile:
            return [0]
        planned = overlap + align - 1 if align > 1 else overlap
        count = math.ceil((length - planned) / (tile - planned))
        span = length - tile
        return sorted({round(i * span / (count - 1) / align) * align for i in range(count)})

    tile = max(multiple, tile - tile % multiple)
    if height <= tile and width <= tile:
        return [Tile(0, 0, height, width)]
    return [Tile(top, left, min(tile, height), min(tile, width)) for top in starts(height) for left in starts(width)]


def child(features: list[str], args: argparse.Namespace, out: Path) -> dict:
    """Time one variant in this process; outputs go to ``out`` as .npy files."""
    if "allocator" in features:
        from yoda_sr.runtime.cpu import tune_allocator

        assert tune_allocator(), "the allocator could not be tuned here"
    import numpy as np
    import torch
    import torch.nn.functional as F

    from yoda_sr import api
    from yoda_sr.image.imaging import resize_bicubic
    from yoda_sr.runtime import tiling

    calls, call_size, baseline = args.calls, args.call_size, args.is_baseline
    settings = api.Settings(steps=args.steps, attention="none" if "no-attention" in features else None)
    if "no-sparse" in features:
        settings.sparse = False
    if not baseline:
        if "mish" not in features:
            from yoda_sr.models import srdiff

            srdiff.mish = lambda x: x * torch.tanh(F.softplus(x))  # upstream's form
        if "tiles" not in features:
            from yoda_sr.runtime import sparse

            tiling.plan_tiles = old_plan_tiles  # type: ignore[assignment]
            sparse.plan_tiles = old_plan_tiles  # type: ignore[assignment]
        options = {"channels_last": "channels_last" in features, "compile": "compile" in features}
        upscaler = api.Upscaler.from_pretrained(None, device="cpu", **options)
    else:
        upscaler = api.Upscaler.from_pretrained(None, device="cpu")
    model = upscaler.model
    denoise = getattr(upscaler, "denoise", model)
    generator = torch.Generator().manual_seed(0)
    lr = torch.rand(1, 3, call_size // 4, call_size // 4, generator=generator) * 2 - 1
    z = torch.randn(1, 3, call_size, call_size, generator=generator)
    step, level = torch.tensor([50]), torch.tensor([0.5])
    result: dict = {"threads": torch.get_num_threads(), "call": [], "call_cpu": [], "upscale": {}}
    with torch.inference_mode():
        cond = model.prepare(lr, resize_bicubic(lr, scale=4))
        denoise(z, cond, step, level)  # warm-up (and compilation)
        for _ in range(calls):
            wall, cpu = time.perf_counter(), time.process_time()
            denoise(z, cond, step, level)
            result["call"].append(time.perf_counter() - wall)
            result["call_cpu"].append(time.process_time() - cpu)
    for name, image in images(args.images).items():
        if "compile" in features:
            upscaler.upscale(image, seed=0, settings=settings)  # compiles this image's tile shape, untimed
        start = time.perf_counter()
        output = upscaler.upscale(image, seed=0, settings=settings).image
        result["upscale"][name] = time.perf_counter() - start
        np.save(out / f"{name.replace(' ', '_')}.npy", output)
    result["peak_rss"] = peak_rss()
    return result


def peak_rss() -> int:
    """This process's peak resident set size in bytes (Linux VmHWM; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        return platform.processor() or "unknown CPU"


def run_child(name: str, features: tuple[str, ...], args: argparse.Namespace, out: Path) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    root = Path(__file__).resolve().parents[1]
    baseline = name == "baseline"
    env["PYTHONPATH"] = str(Path(args.baseline).resolve() if baseline else root)
    if "passive" in features:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    out.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        ",".join(features) or "-",
        "--calls",
        str(args.calls),
        "--call-size",
        str(args.call_size),
        "--out",
        str(out),
        "--images",
        args.images,
    ]
    command += (["--is-baseline"] if baseline else []) + (["--steps", str(args.steps)] if args.steps else [])
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    if done.returncode:
        raise SystemExit(f"variant {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3, help="timed denoiser calls per round")
    parser.add_argument("--call-size", type=int, default=256, help="HR side of the per-call measurement")
    parser.add_argument("--variants", default="plain,channels_last,mish,allocator,passive,tiles,fast")
    parser.add_argument("--compile", action="store_true", help="add the fast+compile variant (minutes)")
    parser.add_argument("--baseline", default=None, metavar="DIR", help="also run this checkout of yoda-sr")
    parser.add_argument("--images", default="sample,photo", help="sample (128 px), photo (256 px) or both")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--is-baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        features = [] if args.child == "-" else args.child.split(",")
        print(json.dumps(child(features, args, Path(args.out))))
        return

    import numpy as np

    names = args.variants.split(",") + (["fast+compile"] if args.compile else [])
    names += ["baseline"] if args.baseline else []
    unknown = [name for name in names if name not in VARIANTS and name != "baseline"]
    if unknown or "plain" not in names:
        raise SystemExit(f"unknown variants {unknown}; the plain variant is needed as the reference")
    work = Path(tempfile.mkdtemp(prefix="yoda-bench-cpu-"))
    runs: dict[str, list[dict]] = {name: [] for name in names}
    started = time.time()
    for round_index in range(args.rounds):
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            runs[name].append(run_child(name, VARIANTS.get(name, ()), args, work / name))
        print(f"round {round_index + 1}/{args.rounds} done ({time.time() - started:.0f} s)", file=sys.stderr)

    def median(name: str, key: str, image: str | None = None) -> float:
        values = [v for run in runs[name] for v in ([run["upscale"][image]] if image else run[key])]
        return statistics.median(values)

    image_names = list(runs["plain"][0]["upscale"])
    reference = {image: np.load(work / "plain" / f"{image.replace(' ', '_')}.npy") for image in image_names}
    steps = f"{args.steps} steps" if args.steps else "its defaults"
    print(
        f"CPU: {cpu_name()}, {os.cpu_count()} cores, {runs['plain'][0]['threads']} threads; {args.rounds} "
        f"interleaved rounds (medians); per call: {args.call_size} x {args.call_size} HR, {args.calls} calls a "
        f"round; upscale: the default model at {steps}, first run in the process; ratio = time / plain time "
        "(lower is faster); diff: max |output - plain output| in 8-bit levels\n"
    )
    header = "| variant | call s | call ratio | " + " | ".join(f"{i} s | {i} ratio | {i} diff" for i in image_names)
    print(header + " | peak RSS MiB | what |")
    print("| --- | ---: | ---: | " + " | ".join("---: | ---: | ---:" for _ in image_names) + " | ---: | --- |")
    call_plain = median("plain", "call")
    for name in names:
        cells = [f"{median(name, 'call'):.3f}", f"{median(name, 'call') / call_plain:.2f}"]
        for image in image_names:
            seconds = median(name, "", image)
            output = np.load(work / name / f"{image.replace(' ', '_')}.npy").astype(np.int64)
            diff = int(np.abs(output - reference[image].astype(np.int64)).max())
            same_method = not {"no-attention", "no-sparse"} & set(VARIANTS.get(name, ()))
            cells += [
                f"{seconds:.2f}",
                f"{seconds / median('plain', '', image):.2f}",
                str(diff) if same_method else "-",
            ]
        rss = max(run["peak_rss"] for run in runs[name]) / 2**20
        print(f"| {name} | " + " | ".join(cells) + f" | {rss:.0f} | {DESCRIPTIONS[name]} |")


if __name__ == "__main__":
    main()
