"""The most any attention map can buy a model: YODA with the map of where its regression base is wrong.

The "weight map" lever (a head trained on the LR to predict |HR - base|, offered as an attention
method) can at best reproduce the map this script computes from the HR image itself: the oracle
``|HR - base|`` (mean over channels, Gaussian blur of ``--sigma`` HR pixels, min-max normalised).
If YODA with the oracle does not beat the base and the weight-free maps, a trained head will not.

For each photo and seed, on the clean 8-bit LR of ``yoda-sr evaluate`` with its per-image seed, every
map (``--methods``, plus ``oracle``) drives the same sampler call (``sampling.sample``, block-pooled
as the CLI pools it, dense evaluation), so the rows differ by the map alone. Prints PSNR-Y, SSIM-Y,
LPIPS-VGG (when installed; border cropped as ``evaluate`` crops it) and the pixel-update fraction,
means over each folder's photos and seeds.

    python bench/oracle_attention.py --model yoda-srdiff-x4 --data data/photos/val --lower-bounds 0,0.3
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def oracle_map(hr: np.ndarray, base: np.ndarray, sigma: float) -> np.ndarray:
    """|HR - base| averaged over channels, blurred, min-max normalised to [0, 1] (H x W float32)."""
    from skimage.filters import gaussian

    error = np.abs(hr.astype(np.float32) - base.astype(np.float32)).mean(axis=2)
    smooth = gaussian(error, sigma=sigma, preserve_range=True)
    span = float(smooth.max() - smooth.min())
    return ((smooth - smooth.min()) / span if span > 0 else np.zeros_like(smooth)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="yoda-srdiff-x4")
    parser.add_argument("--data", nargs="+", default=["data/photos/val"], help="Folders of HR photos.")
    parser.add_argument("--methods", default="none,sift,edge", help="Attention methods beside the oracle.")
    parser.add_argument("--lower-bounds", default="0,0.3")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--sampler", default="ddpm", choices=("ddpm", "ddim"))
    parser.add_argument("--sigma", type=float, default=4.0, help="Blur of the oracle map, in HR pixels.")
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args()

    from yoda_sr.api import Upscaler
    from yoda_sr.attention import compute_attention
    from yoda_sr.evaluation.baselines import degrade, ground_truth, whole_image_condition
    from yoda_sr.evaluation.metrics import crop_border, image_metrics, load_lpips_models
    from yoda_sr.image.imaging import to_array
    from yoda_sr.image.io import read_picture
    from yoda_sr.runtime.sampler import sample
    from yoda_sr.seeds import derive_seed

    upscaler = Upscaler.from_pretrained(args.model, device="cpu")
    model, scale = upscaler.model, upscaler.scale
    block = 64  # what `upscale` pools maps over with its default sparse evaluation
    schedule = upscaler.schedule_spec.build().respace(args.steps)
    lpips, note = load_lpips_models("cpu")
    if note:
        print(note)
    bounds = [float(b) for b in args.lower_bounds.split(",")]
    methods = [m for m in args.methods.split(",") if m] + ["oracle"]
    rows: dict[tuple[str, str], list[tuple[float, float, float, float]]] = defaultdict(list)

    def record(name: str, sr: np.ndarray, hr: np.ndarray, fraction: float) -> None:
        metrics = image_metrics(sr, hr, scale)
        # LPIPS without a border of `scale` pixels, as `yoda-sr evaluate` measures it
        vgg = lpips["vgg"](crop_border(sr, scale), crop_border(hr, scale)) if "vgg" in lpips else float("nan")
        rows[(folder, name)].append((metrics["psnr_y"], metrics["ssim_y"], vgg, fraction))
        print(f"  {name}: {metrics['psnr_y']:.2f} dB, LPIPS-VGG {vgg:.4f}, updates {fraction:.3f}", flush=True)

    for folder in args.data:
        for path in sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg")):
            hr = ground_truth(read_picture(path).rgb, scale)
            lr = degrade(hr, scale)
            height, width = hr.shape[:2]
            with torch.inference_mode():
                padded, cond = whole_image_condition(upscaler, lr)
                size = (padded.shape[-2] * scale, padded.shape[-1] * scale)
                base_image = model.from_diffusion_space(model.known_region(cond), cond)
            base = to_array(base_image[..., :height, :width])
            print(path.name, flush=True)
            record("base", base, hr, 0.0)
            oracle = torch.from_numpy(oracle_map(hr, base, args.sigma))[None, None]
            oracle = F.pad(oracle, (0, size[1] - width, 0, size[0] - height), mode="replicate")
            maps = {m: oracle if m == "oracle" else compute_attention(padded, m, hr_size=size) for m in methods}
            for seed in [int(s) for s in args.seeds.split(",")]:
                for method, bound in [(m, b) for m in methods for b in (bounds if m != "none" else [0.0])]:
                    result = sample(
                        model,
                        cond,
                        schedule,
                        sampler=args.sampler,
                        attention=None if method == "none" else maps[method],
                        lower_bound=bound,
                        mask_input=upscaler.mask_input,
                        generator=[torch.Generator().manual_seed(derive_seed(seed, path.name))],
                        block=block,
                    )
                    name = "plain" if method == "none" else f"{method} l={bound:g}"
                    record(name, to_array(result.image[..., :height, :width]), hr, result.update_fraction)

    for folder in args.data:
        print(f"\n{folder}: {args.model}, {args.steps} {args.sampler} steps, oracle blur sigma {args.sigma:g}\n")
        print("| map | PSNR-Y | SSIM-Y | LPIPS-VGG | pixel updates | images x seeds |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for (where, name), values in rows.items():
            if where == folder:
                psnr, ssim, vgg, fraction = np.mean(np.array(values), axis=0)
                print(f"| {name} | {psnr:.2f} | {ssim:.4f} | {vgg:.4f} | {fraction:.3f} | {len(values)} |")


if __name__ == "__main__":
    main()
