"""Plain and YODA sampling against bicubic, per sampler and step count. Prints a Markdown table.

Held-out photo crops (matplotlib's grace_hopper, scikit-image's stereo_motorcycle, camera and
astronaut; 192 x 192 HR, 4x) are evaluated as ``yoda-sr evaluate`` does (8-bit bicubic LR, PSNR-Y
with a border of 4, one seed per image), for each sampler and number of steps. It measures when
plain diffusion of the given model falls below bicubic, which ``evaluate``'s explanation cites.

    python bench/plain_steps.py [--model NAME|PATH] [--steps 1,2,3,5,10,20] [--samplers ddpm,ddim]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from yoda_sr.api import Settings, Upscaler
from yoda_sr.evaluation.core import Evaluation


def crops(side: int) -> dict[str, np.ndarray]:
    """Centre crops of ``side`` pixels of photos the default model never trained on."""
    import matplotlib.cbook
    from PIL import Image
    from skimage import data

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        hopper = np.asarray(Image.open(handle).convert("RGB"))
    images = {
        "grace_hopper": hopper,
        "stereo_motorcycle": data.stereo_motorcycle()[0],
        "camera": np.repeat(data.camera()[:, :, None], 3, axis=2),
        "astronaut": data.astronaut(),
    }
    out = {}
    for name, image in images.items():
        top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        out[name] = np.ascontiguousarray(image[top : top + side, left : left + side, :3])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--steps", default="1,2,3,5,10,20")
    parser.add_argument("--samplers", default="ddpm,ddim")
    parser.add_argument("--side", type=int, default=192)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    upscaler = Upscaler.from_pretrained(args.model, device=args.device)
    images = crops(args.side)
    label = f"{torch.get_num_threads()} threads" if upscaler.device.type == "cpu" else str(upscaler.device)
    print(f"model {upscaler.name}, device {upscaler.device} ({label}), {len(images)} crops of {args.side} px, x4\n")
    print("| sampler | steps | bicubic | plain | yoda | plain - bicubic (dB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for sampler in args.samplers.split(","):
        for steps in [int(s) for s in args.steps.split(",")]:
            settings = upscaler.resolve(Settings(steps=steps, sampler=sampler))
            evaluation = Evaluation(upscaler, ["bicubic", "plain", "yoda"], settings, upscaler.scale)
            scores: dict[str, list[float]] = {"bicubic": [], "plain": [], "yoda": []}
            for name, image in images.items():
                for record in evaluation.image(image, name).records:
                    scores[record.method].append(record.psnr_y)
            means = {method: float(np.mean(values)) for method, values in scores.items()}
            print(
                f"| {sampler} | {steps} | {means['bicubic']:.2f} | {means['plain']:.2f} | {means['yoda']:.2f} "
                f"| {means['plain'] - means['bicubic']:+.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
