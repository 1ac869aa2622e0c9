"""Peak memory against output size: whole-image sampling versus streamed tiles (docs/method.md §7).

Each configuration runs in a fresh child process, which reports its peak RSS (VmHWM) after loading
the model and after upscaling one photo-like image (scikit-image's astronaut, mirrored out to the
input size) with ``Settings(steps=1)``. Prints a Markdown table.

    python bench/memory.py [--model NAME|PATH] [--mp 1,4,16,64] [--stream on,off] [--timeout 900]
                           [--big]          # also 6000 x 4000 -> 24000 x 16000, streamed

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="checkpoint name or path (default: the embedded model)")
    parser.add_argument("--mp", default="1,4,16,64", help="output megapixels, comma-separated")
    parser.add_argument("--stream", default="on,off", help="stream settings to compare: on, off, auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run")
    parser.add_argument("--max-whole-mp", type=float, default=4, help="skip --stream off above this output size")
    parser.add_argument("--big", action="store_true", help="also 6000 x 4000 -> 24000 x 16000, streamed")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
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
