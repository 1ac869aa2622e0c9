"""Turn a training run into an embedded checkpoint (the default, its photo model, ResShift); print its sha256.

    python configs/package_model.py runs/yoda-srdiff-x4 --attention edge --steps 20 --sampler ddim \
        --wall-time "34 min" --hardware "2-core Intel Xeon CPU"
    python configs/package_model.py runs/yoda-resshift-x4 --name yoda-resshift-x4 --attention sift \
        --lower-bound 0 --steps 4 --sampler resshift --wall-time "..." --hardware "2-core Intel Xeon CPU"

Copies the run's EMA weights (float32) to yoda_sr/weights/NAME.safetensors with the sampling
defaults chosen on the validation split and the provenance the model card states (the recipe is
configs/NAME.toml unless --recipe and --command name a staged one); the sha256 it prints goes into
checkpoints.toml.

The shipped metadata names no path of the machine that trained it: ``training.data`` becomes the
folder the recipes name (``--data``, default data/photos/train, where ``configs/fetch_photos.py --out
data/photos`` puts the training photos), a run initialised from another (``initialised_from``) names
it in words (``--initialised-from``, e.g. "runs/F: stage 5's run F, model card section Stage 5"),
and the script stops if any other value still looks like an absolute path. ``--metadata-only FILE``
applies these rules to an already packaged file and keeps its tensors byte for byte.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from fetch_photos import DATA  # this folder is on sys.path when the script runs
from safetensors.torch import load_file

from yoda_sr import checkpoints

WEIGHTS = Path(__file__).resolve().parent.parent / "yoda_sr" / "weights"
TRAINING_DATA = "data/photos/train"
"""The training folder as every recipe names it (configs/fetch_photos.py --out data/photos)."""
MACHINE_PATH = re.compile(r"(^|[\s(\[=:,;'\"])(/|~/|[A-Za-z]:[\\/])")
"""A value that holds an absolute path (POSIX, home-relative or Windows): a machine's, never shipped."""


def machine_paths(value: Any, prefix: str = "") -> list[str]:
    """The dotted keys of ``value`` (nested metadata) whose text holds an absolute path."""
    if isinstance(value, dict):
        return [key for name, item in value.items() for key in machine_paths(item, f"{prefix}.{name}".lstrip("."))]
    if isinstance(value, list | tuple):
        return [key for item in value for key in machine_paths(item, prefix)]
    return [prefix] if isinstance(value, str) and MACHINE_PATH.search(value) else []


def portable(metadata: dict[str, Any], data: str, initialised_from: str | None) -> dict[str, Any]:
    """``metadata`` with the build machine's paths replaced (module docstring); SystemExit if one is left."""
    metadata = dict(metadata)
    if "training" in metadata:
        metadata["training"] = {**metadata["training"], "data": data}
    if "initialised_from" in metadata:
        if not initialised_from:
            raise SystemExit("the run was initialised from another run: say which with --initialised-from")
        metadata["initialised_from"] = {**metadata["initialised_from"], "model": initialised_from}
    left = machine_paths(metadata)
    if left:
        raise SystemExit(f"metadata still holds a machine's path at {', '.join(left)}")
    return metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, nargs="?")
    parser.add_argument(
        "--name", default="yoda-srdiff-x4", choices=("yoda-srdiff-x4", "yoda-srdiff-x4-photo", "yoda-resshift-x4")
    )
    parser.add_argument("--attention", choices=("edge", "sift"))
    parser.add_argument("--lower-bound", type=float, default=0.2)
    parser.add_argument("--flat-floor", type=float, default=0.0)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--sampler", choices=("ddpm", "ddim", "resshift"))
    parser.add_argument("--wall-time")
    parser.add_argument("--hardware")
    parser.add_argument("--recipe", help="the recipe's files (default: configs/NAME.toml)")
    parser.add_argument("--command", help="the command that trains it (default: train --config on the recipe)")
    parser.add_argument("--data", default=TRAINING_DATA, help="the training folder as the recipe names it")
    parser.add_argument("--initialised-from", help="the run it was initialised from, in words")
    parser.add_argument("--metadata-only", type=Path, metavar="FILE", help="re-write a packaged file's metadata")
    args = parser.parse_args()
    if args.metadata_only is not None:
        target, tensors = args.metadata_only, load_file(str(args.metadata_only))
        metadata = checkpoints.read_metadata(target)
        initialised = args.initialised_from or (metadata.get("initialised_from") or {}).get("model")
        metadata = portable(metadata, args.data, initialised)
    else:
        needed = ("run", "attention", "steps", "sampler", "wall_time", "hardware")
        missing = [name for name in needed if getattr(args, name) is None]
        if missing:
            parser.error(f"needs {', '.join(missing)} (or --metadata-only FILE)")
        source = args.run / "weights" / "ema.safetensors"
        tensors, metadata = load_file(str(source)), checkpoints.read_metadata(source)
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
        metadata = portable(metadata, args.data, args.initialised_from)
    for key in ("format_version", "yoda_sr_version", "weights"):
        metadata.pop(key, None)
    checkpoints.save(target, tensors, metadata)
    print(f"{target}: {target.stat().st_size / 2**20:.1f} MiB, sha256 {checkpoints.sha256_file(target)}")


if __name__ == "__main__":
    main()
