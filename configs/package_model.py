"""Turn a training run into an embedded checkpoint (`yoda-srdiff-x4`, `yoda-resshift-x4`) and print its sha256.

    python configs/package_model.py runs/yoda-srdiff-x4 --attention edge --steps 20 --sampler ddim \
        --wall-time "34 min" --hardware "2-core Intel Xeon CPU"
    python configs/package_model.py runs/yoda-resshift-x4 --name yoda-resshift-x4 --attention sift \
        --lower-bound 0 --steps 4 --sampler resshift --wall-time "..." --hardware "2-core Intel Xeon CPU"

Copies the run's EMA weights (float32) to yoda_sr/weights/NAME.safetensors with the sampling
defaults chosen on the validation split and the provenance the model card states (the recipe is
configs/NAME.toml unless --recipe and --command name a staged one); the sha256 it prints goes into
checkpoints.toml.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fetch_photos import DATA  # this folder is on sys.path when the script runs
from safetensors.torch import load_file

from yoda_sr import checkpoints

WEIGHTS = Path(__file__).resolve().parent.parent / "yoda_sr" / "weights"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--name", default="yoda-srdiff-x4", choices=("yoda-srdiff-x4", "yoda-resshift-x4"))
    parser.add_argument("--attention", required=True, choices=("edge", "sift"))
    parser.add_argument("--lower-bound", type=float, default=0.2)
    parser.add_argument("--flat-floor", type=float, default=0.0)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--sampler", required=True, choices=("ddpm", "ddim", "resshift"))
    parser.add_argument("--wall-time", required=True)
    parser.add_argument("--hardware", required=True)
    parser.add_argument("--recipe", help="the recipe's files (default: configs/NAME.toml)")
    parser.add_argument("--command", help="the command that trains it (default: train --config on the recipe)")
    args = parser.parse_args()
    source = args.run / "weights" / "ema.safetensors"
    metadata = checkpoints.read_metadata(source)
    target = WEIGHTS / f"{args.name}.safetensors"
    metadata.update(
        name=args.name,
        sampling={"steps": args.steps, "sampler": args.sampler, "eta": 0.0},
        yoda={"attention": args.attention, "lower_bound": args.lower_bound, "mask_input": True}
        | ({"flat_floor": args.flat_floor} if args.flat_floor else {}),
        source={
            "trained_by": metadata["source"]["trained_by"],
            "recipe": args.recipe or f"configs/{args.name}.toml",
            "command": args.command or f"yoda-sr train --config configs/{args.name}.toml",
            "data": DATA,
            "hardware": args.hardware,
            "wall_time": args.wall_time,
            "licence": "Apache-2.0 (weights trained by the yoda-sr project)",
        },
    )
    for key in ("format_version", "yoda_sr_version", "weights"):
        metadata.pop(key, None)
    checkpoints.save(target, load_file(str(source)), metadata)
    print(f"{target}: {target.stat().st_size / 2**20:.1f} MiB, sha256 {checkpoints.sha256_file(target)}")


if __name__ == "__main__":
    main()
