"""Upscaling past one machine on Ray (the optional extra ``yoda-sr[ray]``): ``upscale_on_ray``.

The driver (``driver``) plans the job as `yoda-sr upscale` does (find or read the images, name the
outputs, skip finished ones), then feeds the images to actors that hold the model (``worker``). Ray
is imported only when a job runs, so this package imports without it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ..jobs.batch import Batch
from ..jobs.manifest import plan_selection, select_images
from ..jobs.shards import parse_shard
from ..jobs.upscaling import (
    RUN_LOG,
    Job,
    check_out,
    check_suffix,
    default_suffix,
    ignored_endings,
    load,
    output_folder,
)
from ..settings import Settings, output_format
from .cluster import RayOptions
from .driver import RayReport, run_on_ray
from .worker import WorkerSpec

__all__ = ["RayOptions", "RayReport", "WorkerSpec", "run_on_ray", "upscale_on_ray"]


def upscale_on_ray(
    inputs: Sequence[str | Path] = (),
    out: str | Path | None = None,
    settings: Settings | None = None,
    *,
    model: str | None = None,
    seed: int = 0,
    scale: int | None = None,
    options: RayOptions = RayOptions(),
    files_from: str | None = None,
    root: str | Path | None = None,
    shard: str | None = None,
    recursive: bool = False,
    suffix: str | None = None,
    fmt: str = "auto",
    overwrite: bool = False,
    device: str = "auto",
    dtype: str = "auto",
    note: Callable[[str], None] = lambda _: None,
) -> RayReport:
    """Upscale files, folders or a manifest's images on Ray into ``out``, as `yoda-sr upscale
    --engine ray` does; same names, seeds and bytes as the plain CLI. ``settings`` are checked against
    the model on this machine (loaded on the CPU) before Ray starts. Failures are in
    ``RayReport.failures`` (one line each), remarks go to ``note``."""
    options.check()
    fmt = output_format(fmt)
    chosen = parse_shard(shard) if shard is not None else None
    target = Path(out) if out is not None else None
    upscaler, resolved, out_scale = load(model, "cpu", "auto", scale, settings or Settings(), 0, 1)
    suffix = default_suffix(out_scale, target) if suffix is None else check_suffix(suffix)
    run_log = chosen.run_log if chosen is not None else RUN_LOG
    failures: list[str] = []
    batch: Batch[Job] = Batch(overwrite=overwrite, report=failures.append, note=note)
    folder = output_folder(target)
    selection = select_images(
        batch,
        [Path(path) for path in inputs],
        files_from=files_from,
        root=Path(root) if root is not None else None,
        shard=chosen,
        recursive=recursive,
        ignore_endings=(*ignored_endings(suffix), run_log),
        exclude=[folder] if folder else [],
    )
    check_out(target, run_log)
    jobs = plan_selection(batch, selection, target, suffix, fmt, chosen is not None)
    spec = WorkerSpec(
        model if model is not None else upscaler.name,
        resolved,
        out_scale,
        seed,
        device=device,
        dtype=dtype,
        threads=max(1, int(options.cpus_per_worker)),
    )
    report = run_on_ray(jobs, spec, options, run_log=run_log, overwrite=overwrite, note=note)
    report.tally.failed += batch.tally.failed
    report.tally.skipped += batch.tally.skipped
    report.failures[:0] = failures
    return report
