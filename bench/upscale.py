"""End-to-end upscale cost through the library façade: 128 -> 512 (4x), plain versus YODA, dense and sparse.

Seconds per image (model loaded once, attention map and condition included), denoising steps per
second, and peak memory: CUDA's peak allocation on a GPU, the process's peak RSS on the CPU (each
configuration runs in a fresh child process so that peaks do not carry over). YODA runs twice: dense
masked sampling on the pixel-level map (``--sparse off``) and block-sparse sampling (the default:
64 px blocks). Prints a Markdown table.

    python bench/upscale.py [--model NAME|PATH|CONFIG] [--device auto|cpu|cuda] [--steps 20]
                            [--attention edge] [--repeats 2]

``--model`` may also be a registered architecture config (default ``srdiff-div2k-4x``), which is
benchmarked with random weights: speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one(args: argparse.Namespace) -> dict:
    """Time one configuration in this process and report it as a dict."""
    import numpy as np
    import torch

    from yoda_sr import checkpoints
    from yoda_sr.api import Settings, Upscaler
    from yoda_sr.models import create_model, get_config, list_configs

    model = args.model
    if model in {config.name for config in list_configs()}:
        config = get_config(model)
        net = create_model(model)
        path = Path(tempfile.mkdtemp()) / f"{model}.safetensors"
        checkpoints.save(
            path,
            net.state_dict(),
            {
                "kind": "denoiser",
                "arch": config.arch,
                "hparams": net.config,
                "scale": net.info.scale,
                "schedule": config.schedule.to_dict(),
                "sampling": {"steps": args.steps, "sampler": "ddpm"},
            },
        )
        model = str(path)
    upscaler = Upscaler.from_pretrained(model, device=args.device, dtype=args.dtype)
    from skimage import data

    size = 512 // upscaler.scale
    image = np.ascontiguousarray(data.astronaut()[100 : 100 + size, 150 : 150 + size])
    sparse = args.mode_sparse == "on"
    settings = Settings(steps=args.steps, sampler="ddpm", attention=args.mode_attention, tile=0, sparse=sparse)
    device = upscaler.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    upscaler.upscale(image, seed=0, settings=settings)  # warm-up
    best = float("inf")
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = upscaler.upscale(image, seed=0, settings=settings)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        peak_kind = "GPU alloc"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        peak_kind = "RSS"
    return {
        "device": str(device)
        + (
            f" ({torch.cuda.get_device_name(device)})"
            if device.type == "cuda"
            else f" ({torch.get_num_threads()} threads)"
        ),
        "model": upscaler.name,
        "seconds": best,
        "steps_per_s": args.steps / best,
        "updates": result.update_fraction,
        "work": result.work_fraction,
        "peak_mib": peak,
        "peak_kind": peak_kind,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="srdiff-div2k-4x")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--attention", default="edge", help="YODA map for the YODA rows")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--one-sparse", default="off", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        args.mode_attention, args.mode_sparse = args.one, args.one_sparse
        print(json.dumps(one(args)))
        return
    rows = []
    for mode, attention, sparse in (
        ("plain", "none", "off"),
        ("yoda, dense", args.attention, "off"),
        ("yoda, sparse", args.attention, "on"),
    ):
        command = [
            sys.executable,
            __file__,
            "--model",
            args.model,
            "--device",
            args.device,
            "--dtype",
            args.dtype,
            "--steps",
            str(args.steps),
            "--repeats",
            str(args.repeats),
            "--one",
            attention,
            "--one-sparse",
            sparse,
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rows.append((mode, attention, json.loads(output.strip().splitlines()[-1])))
    print(
        f"device: {rows[0][2]['device']}; model {rows[0][2]['model']}; 128x128 -> 512x512; "
        f"{args.steps} DDPM steps; best of {args.repeats}\n"
    )
    kind = rows[0][2]["peak_kind"]
    print(f"| mode | attention | s / image | steps / s | pixel updates | work | peak MiB ({kind}) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for mode, attention, row in rows:
        print(
            f"| {mode} | {attention} | {row['seconds']:.2f} | {row['steps_per_s']:.2f} | "
            f"{row['updates']:.2f} | {row['work']:.2f} | {row['peak_mib']:.0f} |"
        )


if __name__ == "__main__":
    main()
