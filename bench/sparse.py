"""Block-sparse against dense masked sampling: work, time and quality per photo, setting, map and block.

The embedded model (``yoda-srdiff-x4``) super-resolves scikit-image's astronaut, coffee and chelsea
photos (HR: the photo cropped to a multiple of 4; LR: its bicubic downscale, as ``yoda-sr evaluate``
makes it) with the same seed, once with dense masked sampling and once with block-sparse sampling on
the same block mask (``Settings(sparse=False | True, block=B)``), interleaved in one process (the
order alternates between configurations). Settings: the model's defaults (5 DDPM steps, l = 0) and
50 DDPM steps with l = 0.2; maps sift, edge, gaussian and dino-resnet50 on random weights (a
temporary file: its maps are as structured as a trained DINO's would not be, but cost the same).

Columns: the pixel-update and work fractions (``Result``), the whole ``upscale`` call's seconds
dense and sparse, the speed-up, the denoiser's own seconds (forward hooks) and ``ratio`` = sparse
denoiser time / (work fraction x dense denoiser time), the target being <= 1.15; PSNR-Y of the sparse
output against the dense one; PSNR-Y against HR (dense / sparse), and LPIPS-VGG against HR when
``yoda_sr.evaluation.metrics`` has it and its weights are installed ("n/a" otherwise). With ``--pixel``, a row
per photo, setting and map gives the pixel-level mask (``block`` 0, dense), today's default.

    python bench/sparse.py [--photos astronaut,coffee,chelsea] [--settings defaults,50]
                           [--methods sift,edge,gaussian,dino-resnet50] [--blocks 32,64,128]
                           [--pixel] [--side PX] [--halo PX] [--jsonl rows.jsonl] [--table rows.jsonl ...]

Rows are appended to ``--jsonl`` as they finish, so the bench can run in parts; ``--table FILES``
prints the table of rows collected earlier, with a summary per setting and block.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

SETTINGS = {"defaults": {}, "50": {"steps": 50, "lower_bound": 0.2}}


def lpips_vgg():
    """LPIPS-VGG from ``yoda_sr.evaluation.metrics`` (issue 14), or None with the reason."""
    from yoda_sr.evaluation import metrics

    if "vgg" not in getattr(metrics, "LPIPS_NETS", ()):
        return None, "LPIPS-VGG n/a: yoda_sr.evaluation.metrics has no VGG LPIPS here"
    if not metrics.lpips_available("vgg"):
        return None, "LPIPS-VGG n/a: weights not installed (yoda-sr checkpoints download lpips-vgg)"
    return metrics.Lpips("vgg"), "LPIPS-VGG v0.1"


class DenoiserClock:
    """Seconds spent inside the model's forward calls (forward hooks)."""

    def __init__(self, model, device) -> None:
        import torch

        self.seconds, self.started = 0.0, 0.0
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

        def before(*_args) -> None:
            sync()
            self.started = time.perf_counter()

        def after(*_args) -> None:
            sync()
            self.seconds += time.perf_counter() - self.started

        model.register_forward_pre_hook(before)
        model.register_forward_hook(after)


def photos(names: list[str], side: int | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(HR, LR) of scikit-image photos; with ``side``, the HR is the photo's centre crop of that side."""
    from skimage import data

    from yoda_sr.evaluation.baselines import degrade, ground_truth

    pairs = {}
    for name in names:
        rgb = getattr(data, name)()[..., :3]
        if side is not None:
            top, left = max(0, (rgb.shape[0] - side) // 2), max(0, (rgb.shape[1] - side) // 2)
            rgb = rgb[top : top + side, left : left + side]
        hr = ground_truth(np.ascontiguousarray(rgb), 4)
        pairs[name] = (hr, degrade(hr, 4))
    return pairs


def run(args: argparse.Namespace) -> None:
    import torch

    import yoda_sr.attention as attention_module
    from yoda_sr.api import Settings, Upscaler
    from yoda_sr.evaluation.metrics import psnr, y_channel
    from yoda_sr.models.dino import write_random_weights

    folder = Path(tempfile.mkdtemp())
    random_weights = {"dino-resnet50": write_random_weights("dino-resnet50", folder / "dino-resnet50.safetensors")}
    original = attention_module.default_weights_path
    attention_module.default_weights_path = lambda method: random_weights.get(method) or original(method)

    if args.halo is not None:
        import yoda_sr.runtime.sparse

        yoda_sr.runtime.sparse.HALO = args.halo
    upscaler = Upscaler.from_pretrained(None, device=args.device)
    clock = DenoiserClock(upscaler.model, upscaler.device)
    lpips, lpips_note = lpips_vgg()
    print(f"# {upscaler.name} on {upscaler.device}, {torch.get_num_threads()} threads; {lpips_note}", flush=True)

    def y_psnr(a: np.ndarray, b: np.ndarray) -> float:
        return psnr(y_channel(a)[4:-4, 4:-4], y_channel(b)[4:-4, 4:-4])

    def upscale(lr: np.ndarray, settings: Settings) -> tuple[object, float, float]:
        clock.seconds = 0.0
        start = time.perf_counter()
        result = upscaler.upscale(lr, seed=0, settings=settings)
        return result, time.perf_counter() - start, clock.seconds

    def score(image: np.ndarray, hr: np.ndarray) -> dict:
        crop = (slice(4, -4), slice(4, -4))
        return {"psnr_y": y_psnr(image, hr), "lpips_vgg": None if lpips is None else lpips(image[crop], hr[crop])}

    order = 0
    out = open(args.jsonl, "a") if args.jsonl else None  # noqa: SIM115
    for name, (hr, lr) in photos(args.photos.split(","), args.side).items():
        for setting in args.settings.split(","):
            for method in args.methods.split(","):
                common = {**SETTINGS[setting], "attention": method}
                if args.pixel:
                    result, seconds, denoiser = upscale(lr, Settings(**common, sparse=False, block=0))
                    row = {"photo": name, "setting": setting, "method": method, "block": 0, "pixel": True}
                    row |= {"update": result.update_fraction, "work": result.work_fraction, "dense_s": seconds}
                    row |= {"dense_denoiser_s": denoiser, "dense": score(result.image, hr)}
                    emit(row, out)
                for block in (int(b) for b in args.blocks.split(",")):
                    runs = {}
                    modes = ("dense", "sparse") if order % 2 == 0 else ("sparse", "dense")
                    order += 1
                    for mode in modes:
                        runs[mode] = upscale(lr, Settings(**common, sparse=mode == "sparse", block=block))
                    (dense, dense_s, dense_d), (sparse, sparse_s, sparse_d) = runs["dense"], runs["sparse"]
                    assert dense.update_fraction == sparse.update_fraction
                    row = {"photo": name, "setting": setting, "method": method, "block": block, "pixel": False}
                    row |= {"update": sparse.update_fraction, "work": sparse.work_fraction}
                    row |= {"dense_work": dense.work_fraction, "dense_s": dense_s, "sparse_s": sparse_s}
                    row |= {"dense_denoiser_s": dense_d, "sparse_denoiser_s": sparse_d}
                    row |= {"sparse_vs_dense_psnr_y": y_psnr(sparse.image, dense.image)}
                    row |= {"dense": score(dense.image, hr), "sparse": score(sparse.image, hr)}
                    emit(row, out)
    if out is not None:
        out.close()


def emit(row: dict, out) -> None:
    line = json.dumps(row, sort_keys=True)
    print(line, flush=True)
    if out is not None:
        out.write(line + "\n")
        out.flush()


def cell(value, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.{digits}f}"


def table(rows: list[dict]) -> None:
    """The Markdown table of benchmark rows, then means per setting and block."""
    print("| photo | setting | map | block | update | work | dense s | sparse s | speed-up | denoiser ratio "
          "| PSNR-Y sparse vs dense | PSNR-Y dense / sparse | LPIPS-VGG dense / sparse |")  # fmt: skip
    print("| --- | --- | --- | ---: |" + " ---: |" * 9)
    for r in rows:
        if r["pixel"]:
            lp = cell(r["dense"]["lpips_vgg"], 4)
            print(f"| {r['photo']} | {r['setting']} | {r['method']} | pixel | {r['update']:.3f} | {r['work']:.3f} "
                  f"| {r['dense_s']:.1f} | - | - | - | - | {r['dense']['psnr_y']:.2f} | {lp} |")  # fmt: skip
            continue
        ratio = (
            r["sparse_denoiser_s"] / max(r["work"] * r["dense_denoiser_s"] / r["dense_work"], 1e-9)
            if r["dense_work"]
            else None
        )
        lp = f"{cell(r['dense']['lpips_vgg'], 4)} / {cell(r['sparse']['lpips_vgg'], 4)}"
        print(f"| {r['photo']} | {r['setting']} | {r['method']} | {r['block']} | {r['update']:.3f} | {r['work']:.3f} "
              f"| {r['dense_s']:.1f} | {r['sparse_s']:.1f} | {r['dense_s'] / r['sparse_s']:.2f} | {cell(ratio)} "
              f"| {cell(r['sparse_vs_dense_psnr_y'], 1)} | {r['dense']['psnr_y']:.2f} / {r['sparse']['psnr_y']:.2f} "
              f"| {lp} |")  # fmt: skip
    print("\nMeans over photos and maps (ratios of sums for times):\n")
    print("| setting | block | update | work | work / update | speed-up | denoiser ratio | PSNR-Y sparse - dense "
          "| PSNR-Y block - pixel |")  # fmt: skip
    print("| --- | ---: |" + " ---: |" * 7)
    pixel = {(r["photo"], r["setting"], r["method"]): r for r in rows if r["pixel"]}
    for setting in dict.fromkeys(r["setting"] for r in rows):
        for block in sorted({r["block"] for r in rows if not r["pixel"] and r["setting"] == setting}):
            group = [r for r in rows if not r["pixel"] and r["setting"] == setting and r["block"] == block]
            update = np.mean([r["update"] for r in group])
            work = np.mean([r["work"] for r in group])
            speed = sum(r["dense_s"] for r in group) / sum(r["sparse_s"] for r in group)
            expected = sum(r["work"] / r["dense_work"] * r["dense_denoiser_s"] for r in group if r["dense_work"])
            ratio = sum(r["sparse_denoiser_s"] for r in group if r["dense_work"]) / expected
            gap = np.mean([r["sparse"]["psnr_y"] - r["dense"]["psnr_y"] for r in group])
            paired = [(r, pixel.get((r["photo"], setting, r["method"]))) for r in group]
            gaps = [r["dense"]["psnr_y"] - p["dense"]["psnr_y"] for r, p in paired if p is not None]
            print(f"| {setting} | {block} | {update:.3f} | {work:.3f} | {work / update:.2f} | {speed:.2f} "
                  f"| {ratio:.2f} | {gap:+.3f} | {cell(np.mean(gaps) if gaps else None, 3)} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default="astronaut,coffee,chelsea")
    parser.add_argument("--settings", default="defaults,50", help="defaults (the model's) and/or 50 (steps, l = 0.2)")
    parser.add_argument("--methods", default="sift,edge,gaussian,dino-resnet50")
    parser.add_argument("--blocks", default="32,64,128")
    parser.add_argument("--pixel", action="store_true", help="also run the pixel-level mask (dense) as a reference")
    parser.add_argument("--side", type=int, default=None, help="centre crops of this HR side (default: whole photos)")
    parser.add_argument("--halo", type=int, default=None, help="HR pixels of context (default: sparse.HALO)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jsonl", default=None, help="append each row to this file")
    parser.add_argument("--table", nargs="*", default=None, help="print the table of rows in these files")
    args = parser.parse_args()
    if args.table is not None:
        rows = [json.loads(line) for path in args.table for line in Path(path).read_text().splitlines() if line]
        table(rows)
        return
    run(args)


if __name__ == "__main__":
    main()
