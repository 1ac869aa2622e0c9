"""`upscale`'s options for work past one machine: ``--files-from``, ``--root``, ``--shard`` and the
Ray engine (``--engine ray``, ``--ray-address``, ``--workers``, ``--gpus-per-worker``,
``--cpus-per-worker``), and their checks before any image is touched."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ..errors import SettingError
from .common import UsageError

if TYPE_CHECKING:
    from ..distributed.cluster import RayOptions
    from ..jobs.shards import Shard

ENGINES = ("local", "ray")


def files_from_option() -> Any:
    return typer.Option(
        None,
        "--files-from",
        metavar="MANIFEST",
        help="Read the images from a file, one path per line (relative to its folder, or absolute; - reads "
        "stdin), instead of INPUT: no folder is walked.",
    )


def root_option() -> Any:
    return typer.Option(
        None,
        "--root",
        metavar="DIR",
        help="With --files-from: the folder whose relative paths name the outputs (mirrored under -o) and "
        "seed the images (default: the manifest's folder); entries outside it fail.",
    )


def shard_option() -> Any:
    return typer.Option(
        None,
        "--shard",
        metavar="I/N|auto|auto/N",
        help="Do only shard I of N (0-based), split by a hash of each image's relative path; auto: I and N of a "
        "Slurm array, auto/N: I of a Slurm array or of a Kubernetes indexed Job (JOB_COMPLETION_INDEX). "
        "Its run log is yoda-sr-upscale.I-of-N.jsonl (`yoda-sr runs merge` joins them).",
    )


def engine_option() -> Any:
    return typer.Option(
        "local",
        "--engine",
        metavar="local|ray",
        help="local: this process (and torchrun's); ray: actors holding the model on a Ray cluster "
        "(pip install 'yoda-sr[ray]').",
    )


def ray_address_option() -> Any:
    return typer.Option(
        None,
        "--ray-address",
        metavar="auto|HOST:PORT",
        help="With --engine ray: the cluster to join (auto: RAY_ADDRESS, or the one `ray start` made here); "
        "default: start a Ray on this machine, listening on 127.0.0.1 only.",
    )


def workers_option() -> Any:
    return typer.Option(
        None,
        "--workers",
        metavar="N",
        help="With --engine ray: workers, each holding the model (default: as many as the cluster's GPUs or "
        "CPUs allow).",
    )


def gpus_option() -> Any:
    return typer.Option(0.0, "--gpus-per-worker", metavar="G", help="With --engine ray: GPUs per worker.")


def cpus_option() -> Any:
    return typer.Option(
        1.0, "--cpus-per-worker", metavar="C", help="With --engine ray: CPUs per worker (its torch threads)."
    )


@dataclass
class ScaleOut:
    """The checked choices: this run's shard (or None) and the Ray options (None: the local engine)."""

    shard: Shard | None
    ray: RayOptions | None


def check(
    inputs: list[Path] | None,
    files_from: str | None,
    root: Path | None,
    shard: str | None,
    engine: str,
    ray: RayOptions,
    ray_flags: bool,
) -> ScaleOut:
    """Refuse option combinations that cannot work, in one line, before anything is loaded or written.
    ``ray_flags``: some Ray option was given."""
    from ..jobs.shards import parse_shard

    if files_from is None and not inputs:
        raise UsageError("give INPUT... (image files, folders or globs) or --files-from MANIFEST")
    if files_from is not None and inputs:
        raise UsageError("give INPUT... or --files-from MANIFEST, not both")
    if root is not None and files_from is None:
        raise UsageError("--root goes with --files-from (folders given as INPUT are their own roots)")
    value = engine.strip().lower()
    if value not in ENGINES:
        raise SettingError("engine", f"must be local or ray, got {engine!r}")
    if value == "local" and ray_flags:
        raise UsageError("--ray-address, --workers, --gpus-per-worker and --cpus-per-worker go with --engine ray")
    chosen = parse_shard(shard) if shard is not None else None
    if value == "local":
        return ScaleOut(chosen, None)
    ray.check()
    from ..distributed.cluster import check_reachable, import_ray

    import_ray(local=ray.local)  # a missing Ray or a wrong address is one line now, not after the plan
    check_reachable(ray)
    return ScaleOut(chosen, ray)
