"""Attention-map time per LR image size and method. Prints a Markdown table.

DINO methods run on randomly initialised weights in the official layouts (torchvision ResNet-50
without ``fc``; timm ViT-S), written to a temporary safetensors file: the time does not depend
on the weights. Each timing is the best of ``--repeats`` warm runs of ``compute_attention``
(input resize, backbone, head aggregation, resize to 4x the LR size).

    python bench/attention.py [--device cpu|cuda] [--sizes 128,256,512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from yoda_sr.attention import METHODS, compute_attention
from yoda_sr.models.dino import write_random_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", default="128,256,512", help="LR sides in pixels")
    parser.add_argument("--methods", default=",".join(m for m in METHODS if m != "none"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    sizes = [int(size) for size in args.sizes.split(",")]
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"device: {device} ({label}); best of {args.repeats} warm runs; map at 4x the LR size\n")
    print("| method | " + " | ".join(f"{size}x{size} (s)" for size in sizes) + " |")
    print("| --- |" + " ---: |" * len(sizes))
    with tempfile.TemporaryDirectory() as folder:
        for method in args.methods.split(","):
            weights = (
                write_random_weights(method, Path(folder) / f"{method}.safetensors")
                if method.startswith("dino")
                else None
            )
            cells = []
            for size in sizes:
                lr = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1
                best = float("inf")
                for attempt in range(args.repeats + 1):
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    start = time.perf_counter()
                    compute_attention(lr, method, hr_size=(4 * size, 4 * size), weights=weights, device=device)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    if attempt:  # the first run loads weights and warms up
                        best = min(best, time.perf_counter() - start)
                cells.append(f"{best:.3f}")
            print(f"| {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
