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
from safetensors.torch import save_file

from yoda_sr.attention import METHODS, compute_attention


def random_weights(method: str, folder: Path) -> Path:
    """A safetensors file of randomly initialised weights in the layout ``method`` loads."""
    torch.manual_seed(0)
    if method == "dino-resnet50":
        import torchvision

        state = {k: v for k, v in torchvision.models.resnet50().state_dict().items() if not k.startswith("fc.")}
    else:
        import timm

        patch = 8 if method == "dino-vits8" else 16
        state = timm.create_model(f"vit_small_patch{patch}_224", pretrained=False, num_classes=0).state_dict()
    path = folder / f"{method}.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


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
            weights = random_weights(method, Path(folder)) if method.startswith("dino") else None
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
