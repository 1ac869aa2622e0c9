"""Sampler throughput: seconds per image and denoising steps per second, plain versus YODA.

Random weights (speed does not depend on them); a centred Gaussian attention map with lower bound
0.2 for the YODA rows. Prints a Markdown table.

    python bench/sampling.py [--device cpu|cuda] [--models srdiff-tiny,sr3-tiny,srdiff-div2k-4x]
                             [--size 128] [--steps 20] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from yoda_sr.image.imaging import resize_bicubic
from yoda_sr.models import create_model, get_config
from yoda_sr.runtime.sampler import sample


def gaussian_attention(size: int, device: torch.device) -> torch.Tensor:
    axis = torch.linspace(-1, 1, size, device=device)
    sigma = 0.5  # a quarter of the side, in [-1, 1] coordinates
    blob = torch.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * sigma**2))
    return ((blob - blob.min()) / (blob.max() - blob.min()))[None, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="srdiff-tiny,sr3-tiny,srdiff-div2k-4x")
    parser.add_argument("--size", type=int, default=128, help="HR side in pixels")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{threads} threads'})")
    print(f"HR {args.size}x{args.size}, {args.steps} steps, best of {args.repeats}\n")
    print("| model | params | sampler | mode | s / image | steps / s | pixel updates |")
    print("| --- | ---: | --- | --- | ---: | ---: | ---: |")
    for name in args.models.split(","):
        config = get_config(name)
        model = create_model(name).eval().to(device, memory_format=torch.channels_last)
        scale = model.info.scale
        params = sum(p.numel() for p in model.parameters())
        lr = torch.rand(1, 3, args.size // scale, args.size // scale, device=device) * 2 - 1
        x_up = resize_bicubic(lr, size=(args.size, args.size))
        with torch.inference_mode():
            cond = model.prepare(lr, x_up)
        schedule = config.schedule.build().respace(args.steps)
        attention = gaussian_attention(args.size, device)
        for sampler in ("ddpm", "ddim"):
            for mode, att in (("plain", None), ("yoda", attention)):
                best = float("inf")
                for _ in range(args.repeats):
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    start = time.perf_counter()
                    result = sample(
                        model,
                        cond,
                        schedule,
                        sampler=sampler,
                        attention=att,
                        lower_bound=0.2,
                        generator=torch.Generator(device).manual_seed(0),
                    )
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    best = min(best, time.perf_counter() - start)
                print(
                    f"| {name} | {params / 1e6:.2f}M | {sampler} | {mode} | {best:.3f} | "
                    f"{args.steps / best:.1f} | {result.update_fraction:.2f} |"
                )


if __name__ == "__main__":
    main()
