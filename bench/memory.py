"""Peak memory against output size: whole-image sampling versus streamed tiles (docs/method.md §7).

Each configuration runs in a fresh child process, which reports its peak RSS (VmHWM) after loading
the model and after upscaling one photo-like image (scikit-image's astronaut, mirrored out to the
input size) with ``Settings(steps=1)``. Prints a Markdown table.

    python bench/memory.py [--model NAME|PATH] [--mp 1,4,16,64] [--stream on,off] [--timeout 900]
                           [--big]          # also 6000 x 4000 -> 24000 x 16000, streamed
    python bench/memory.py --steps-outside  # the large-photo steps around sampling, each alone:

- ``clean``: read a 6000 x 4000 JPEG (q75) and ``--clean auto`` it (deblocking in tiles);
- ``attention``: ``yoda-sr attention`` of a 6000 x 4000 PNG at ``--scale 4`` (a 24000 x 16000
  float32 map, 1.4 GiB, rendered as a heat map PNG), with the weight-free ``sift`` map;
- ``write``: write the 4x output of a 50 MP photo as PNG (28284 x 28284 uint8, 2.2 GiB), as
  ``upscale`` writes it.

Each runs in a fresh child process and reports its peak RSS, what the step's own arrays take (the
image read, the map, the output) and the rest. Sampling such an output on this CPU takes hours.

``--stream auto`` lets the library choose (it streams above half the machine's memory size).
A run that exceeds ``--timeout`` seconds is reported as such.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time


def peak_rss() -> int:
    """This process's peak resident set size in bytes (Linux VmHWM)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(model: str, height: int, width: int, stream: str, threads: int) -> None:
    import numpy as np
    import torch
    from skimage import data

    from yoda_sr.api import Settings, Upscaler

    torch.set_num_threads(threads)
    photo = data.astronaut()[..., :3]
    reps = (math.ceil(height / photo.shape[0]), math.ceil(width / photo.shape[1]))
    row = np.concatenate([photo if j % 2 == 0 else photo[:, ::-1] for j in range(reps[1])], axis=1)
    image = np.concatenate([row if i % 2 == 0 else row[::-1] for i in range(reps[0])], axis=0)
    image = np.ascontiguousarray(image[:height, :width])
    upscaler = Upscaler.from_pretrained(model or None, device="cpu")
    loaded = peak_rss()
    start = time.perf_counter()
    result = upscaler.upscale(image, settings=Settings(steps=1, stream=stream))
    seconds = time.perf_counter() - start
    print(json.dumps({"loaded": loaded, "peak": peak_rss(), "seconds": seconds, "streamed": result.streamed}))


def reset_peak() -> None:
    """Start VmHWM again from the current RSS (Linux: ``/proc/self/clear_refs``)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def photo_like(height: int, width: int):
    """scikit-image's astronaut mirrored out to ``height`` x ``width`` (uint8 RGB)."""
    import numpy as np
    from skimage import data

    photo = data.astronaut()[..., :3]
    reps = (math.ceil(height / photo.shape[0]), math.ceil(width / photo.shape[1]))
    row = np.concatenate([photo if j % 2 == 0 else photo[:, ::-1] for j in range(reps[1])], axis=1)
    image = np.concatenate([row if i % 2 == 0 else row[::-1] for i in range(reps[0])], axis=0)
    return np.ascontiguousarray(image[:height, :width])


def step_child(step: str, folder: str) -> None:
    """One large-photo step outside sampling, in this (fresh) process; prints peak RSS as JSON."""
    import os
    from pathlib import Path

    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    source = Path(folder)
    if step == "clean":
        Image.fromarray(photo_like(4000, 6000)).save(source / "photo.jpg", quality=75)
        from yoda_sr.image.io import read_picture
        from yoda_sr.image.restoration import clean

        reset_peak()  # from here: the step's own work
        start = time.perf_counter()
        picture = read_picture(source / "photo.jpg")
        cleaned, done = clean(picture.rgb)
        own = picture.rgb.nbytes + cleaned.nbytes
        detail = done.describe()
    elif step == "attention":
        Image.fromarray(photo_like(4000, 6000)).save(source / "photo.png")
        start = time.perf_counter()
        done = subprocess.run(
            ["yoda-sr", "attention", str(source / "photo.png"), "--scale", "4", "--method", "sift",
             "-o", str(source / "map.png"), "--overwrite"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        import resource

        child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        if done.returncode != 0:
            raise SystemExit((done.stderr.strip().splitlines() or ["failed"])[-1])
        seconds = time.perf_counter() - start
        own = 24000 * 16000 * 4
        print(json.dumps({"peak": child_peak, "own": own, "seconds": seconds, "detail": "sift map, whole process"}))
        return
    else:
        import numpy as np

        from yoda_sr.image.io import write_picture

        side = 28284  # 50 MP x 16
        output = np.empty((side, side, 3), np.uint8)
        tile = photo_like(1024, side)
        for top in range(0, side, 1024):
            output[top : top + 1024] = tile[: side - top]
        del tile
        reset_peak()
        start = time.perf_counter()
        write_picture(source / "out.png", output)
        own = output.nbytes
        detail = f"{os.path.getsize(source / 'out.png') / 2**20:.0f} MiB file"
    seconds = time.perf_counter() - start
    print(json.dumps({"peak": peak_rss(), "own": own, "seconds": seconds, "detail": detail}))


def steps_outside(timeout: float) -> None:
    """The ``--steps-outside`` table."""
    import tempfile

    print("| step | peak RSS MiB | its arrays MiB | rest MiB | seconds | note |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for step in ("clean", "attention", "write"):
        with tempfile.TemporaryDirectory() as folder:
            try:
                done = subprocess.run(
                    [sys.executable, __file__, "--step-child", step, folder],
                    capture_output=True, text=True, timeout=timeout, check=False,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                print(f"| {step} | over {timeout:.0f} s | | | | |", flush=True)
                continue
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["?"])[-1][:80]
            print(f"| {step} | failed: {reason} | | | | |", flush=True)
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        peak, own = row["peak"] / 2**20, row["own"] / 2**20
        print(
            f"| {step} | {peak:.0f} | {own:.0f} | {peak - own:.0f} | {row['seconds']:.0f} | {row['detail']} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="checkpoint name or path (default: the embedded model)")
    parser.add_argument("--mp", default="1,4,16,64", help="output megapixels, comma-separated")
    parser.add_argument("--stream", default="on,off", help="stream settings to compare: on, off, auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run")
    parser.add_argument("--max-whole-mp", type=float, default=4, help="skip --stream off above this output size")
    parser.add_argument("--big", action="store_true", help="also 6000 x 4000 -> 24000 x 16000, streamed")
    parser.add_argument("--steps-outside", action="store_true", help="the large-photo steps around sampling")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--step-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step_child:
        step_child(*args.step_child)
        return
    if args.steps_outside:
        steps_outside(args.timeout)
        return
    if args.child:
        height, width, stream = args.child
        child(args.model, int(height), int(width), stream, args.threads)
        return

    runs = []
    for mp in (float(value) for value in args.mp.split(",")):
        side = round(math.sqrt(mp * 1e6) / 4)  # square inputs, 4x
        for stream in args.stream.split(","):
            if stream == "off" and mp > args.max_whole_mp:
                continue
            runs.append((side, side, stream))
    if args.big:
        runs.append((4000, 6000, "on"))

    print(f"model: {args.model or 'embedded'}, steps 1, {args.threads} threads, CPU")
    print()
    print("| input | output | output MP | stream | streamed | peak RSS MiB | model loaded MiB | seconds |")
    print("| --- | --- | ---: | --- | --- | ---: | ---: | ---: |")
    for height, width, stream in runs:
        command = [sys.executable, __file__, "--model", args.model, "--threads", str(args.threads)]
        output = f"{width * 4}x{height * 4}"
        mp = height * width * 16 / 1e6
        try:
            done = subprocess.run(
                [*command, "--child", str(height), str(width), stream],
                capture_output=True,
                text=True,
                timeout=args.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            print(f"| {width}x{height} | {output} | {mp:.1f} | {stream} | | over {args.timeout:.0f} s | | |")
            continue
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["?"])[-1][:80]
            print(f"| {width}x{height} | {output} | {mp:.1f} | {stream} | failed: {reason} | | | |", flush=True)
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"| {width}x{height} | {output} | {mp:.1f} | {stream} | {'yes' if row['streamed'] else 'no'} "
            f"| {row['peak'] / 2**20:.0f} | {row['loaded'] / 2**20:.0f} | {row['seconds']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
