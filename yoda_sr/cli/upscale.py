"""`yoda-sr upscale`: options in, one line (or JSON object) per image out; the work is ``upscaling``.

Outputs are written atomically, existing ones are skipped (so re-running an interrupted batch
finishes it), inputs are never overwritten, and a failing image costs one line while the batch goes
on (``batch.Batch``). Under ``torchrun`` each rank takes every WORLD_SIZE-th image. ``--files-from``
and ``--shard`` choose the images (``manifest``, ``shards``); ``--engine ray`` runs them on Ray
actors (``distributed``); their options are in ``scale_out``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ..errors import SettingError
from . import scale_out
from .common import (
    UsageError,
    clean_option,
    debugging,
    flat_floor_option,
    note,
    notes,
    output_path,
    photo_model_option,
    report_error,
)

if TYPE_CHECKING:
    from ..jobs.upscaling import Job, Upscaled


def upscale(
    ctx: typer.Context,
    inputs: list[Path] | None = typer.Argument(
        None, metavar="[INPUT]...", help="Image files, folders or globs (or --files-from)."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        metavar="FILE|DIR",
        parser=output_path,
        help="An image file (one input) or a folder (created; sub-folders mirrored). "
        "Default: beside each input, named <stem>_x<scale>.",
    ),
    scale: int | None = typer.Option(None, "--scale", "-s", metavar="S", help="Upscale factor (default: the model's)."),
    model: str | None = typer.Option(
        None, "--model", "-m", metavar="NAME|PATH", help="Checkpoint name, .safetensors file or training run folder."
    ),
    steps: int | None = typer.Option(None, "--steps", metavar="N", help="Sampling steps (default: the model's)."),
    sampler: str | None = typer.Option(None, "--sampler", metavar="ddpm|ddim|resshift", help="Default: the model's."),
    eta: float | None = typer.Option(None, "--eta", metavar="E", help="DDIM eta (0 = deterministic)."),
    attention: str = typer.Option(
        "auto",
        "--attention",
        metavar="auto|METHOD",
        help="YODA attention map: the model's (auto), dino-resnet50, dino-vits8, dino-vits16, gaussian, "
        "edge, sift, or none (plain diffusion).",
    ),
    lower_bound: float | None = typer.Option(None, "--lower-bound", "-l", metavar="L", help="YODA's lower bound l."),
    flat_floor: float | None = flat_floor_option(),
    clean: str | None = clean_option(),
    photo_model: str | None = photo_model_option(),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Base seed; each image's seed also depends on its path."),
    device: str = typer.Option("auto", "--device", metavar="auto|cpu|cuda[:i]|mps", help="Where to compute."),
    dtype: str = typer.Option("auto", "--dtype", metavar="auto|fp32|fp16|bf16", help="Model precision."),
    tile: str = typer.Option("auto", "--tile", metavar="auto|0|PX", help="HR tile side for large images (0: off)."),
    tile_overlap: int = typer.Option(32, "--tile-overlap", metavar="PX", help="Overlap between tiles."),
    tile_batch: int = typer.Option(
        1, "--tile-batch", metavar="N", help="Tiles of one image per denoiser call (never mixed across images)."
    ),
    stream: str = typer.Option(
        "auto",
        "--stream",
        metavar="auto|on|off",
        help="Sample large images in streamed tiles (memory bounded by the tile); auto: when whole-image "
        "sampling would need more than half the machine's memory.",
    ),
    sparse: str = typer.Option(
        "on",
        "--sparse",
        metavar="on|off",
        help="Run the denoiser only on the active blocks of YODA's mask (off: on the whole image, as dense "
        "masked sampling does).",
    ),
    block: str = typer.Option(
        "auto",
        "--block",
        metavar="auto|0|PX",
        help="Average the attention map over blocks of this HR side before masking; auto: 64 with --sparse on, "
        "0 (pixel-level masks) with --sparse off.",
    ),
    compile_model: bool = typer.Option(
        False,
        "--compile",
        help="Compile the denoiser (torch.compile) for long jobs: about a minute per tile shape the first "
        "time, then faster per dense step (block-sparse crops change shape and run uncompiled); falls back "
        "to uncompiled with one line if it cannot.",
    ),
    batch_size: int = typer.Option(1, "--batch-size", "-b", metavar="B", help="Images of one size sampled together."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Look into sub-folders (mirrored under --out)."),
    suffix: str | None = typer.Option(None, "--suffix", metavar="S", help="Appended to output names."),
    fmt: str = typer.Option("auto", "--format", metavar="auto|png|jpg|webp|tiff", help="Output format."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (default: skip them)."),
    save_attention: bool = typer.Option(False, "--save-attention", help="Also write <output>.attention.png."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object per image on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print errors only."),
    max_pixels: int | None = typer.Option(
        None, "--max-pixels", metavar="N", help="Largest input (width x height) to decode; raises the bomb guard."
    ),
    files_from: str | None = scale_out.files_from_option(),
    root: Path | None = scale_out.root_option(),
    shard: str | None = scale_out.shard_option(),
    engine: str = scale_out.engine_option(),
    ray_address: str | None = scale_out.ray_address_option(),
    workers: int | None = scale_out.workers_option(),
    gpus_per_worker: float = scale_out.gpus_option(),
    cpus_per_worker: float = scale_out.cpus_option(),
) -> None:
    """Super-resolve images, folders of images and globs with YODA diffusion."""
    import json

    from ..distributed.cluster import RayOptions
    from ..jobs.batch import Batch, Hints
    from ..jobs.manifest import plan_selection, select_images
    from ..jobs.upscaling import (
        RUN_LOG,
        UpscaleJobs,
        check_out,
        check_suffix,
        default_suffix,
        ignored_endings,
        load,
        output_folder,
        output_scale,
    )
    from ..settings import Settings, output_format, parse_block, parse_sparse, parse_tile
    from .options import torchrun_shard

    fmt = output_format(fmt)
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    wanted = Settings(
        steps=steps,
        sampler=sampler,
        eta=eta,
        attention=attention,
        lower_bound=lower_bound,
        flat_floor=flat_floor,
        clean=clean,
        photo_model=photo_model,
        tile=parse_tile(tile),
        tile_overlap=tile_overlap,
        tile_batch=tile_batch,
        stream=stream,
        sparse=parse_sparse(sparse),
        block=parse_block(block),
    )
    if suffix is not None:
        check_suffix(suffix)
    ray_options = RayOptions(ray_address, workers, gpus_per_worker, cpus_per_worker, debug=debugging(ctx))
    ray_flags = ray_address is not None or workers is not None or bool(gpus_per_worker) or cpus_per_worker != 1
    chosen = scale_out.check(inputs, files_from, root, shard, engine, ray_options, ray_flags)
    rank, world, local_rank = torchrun_shard()
    if chosen.ray is not None and world > 1:
        raise UsageError("--engine ray runs its own workers; start it once, not under torchrun")
    if chosen.ray is not None and batch_size > 1:
        raise UsageError("--batch-size: --engine ray sends one image per call; use --workers for more at once")
    # The driver of a Ray run checks the settings on the CPU; its workers load on --device.
    placement = ("cpu", "auto", 0, 1) if chosen.ray is not None else (device, dtype, local_rank, world)
    # Which outputs exist is decided first, from the model's metadata and the files: a run whose
    # outputs all exist loads no model (and imports no torch).
    loaded = None
    out_scale = output_scale(model, scale)
    if out_scale is None:  # metadata that does not say: loading names what is wrong with it
        loaded = load(model, *placement[:2], scale, wanted, *placement[2:])
        out_scale = loaded[2]
    suffix = default_suffix(out_scale, out) if suffix is None else suffix
    hints = Hints(exists="use --overwrite", input="use --suffix or -o", collision="use --format or -o")
    batch: Batch[Job] = Batch(
        overwrite=overwrite,
        report=report_error,
        note=notes(quiet),
        hints=hints,
        reraise=debugging(ctx),
        shard=(rank, world),
    )
    run_log = chosen.shard.run_log if chosen.shard is not None else RUN_LOG
    folder = output_folder(out)
    if chosen.shard is not None and out is not None and folder is None:
        raise SettingError("out", f"{out} is a file name; shards need an output folder")
    selection = select_images(
        batch,
        inputs or [],
        files_from=files_from,
        root=root,
        shard=chosen.shard,
        recursive=recursive,
        ignore_endings=(*ignored_endings(suffix), run_log),
        exclude=[folder] if folder else [],
    )
    check_out(out, run_log)
    jobs = plan_selection(batch, selection, out, suffix, fmt, chosen.shard is not None, hints.input)
    if not jobs:
        if batch.tally.failed:
            raise typer.Exit(1)
        return
    from ..attention import WEIGHTED_METHODS, MissingWeightsError, require_weights

    upscaler, settings, out_scale = loaded or load(model, *placement[:2], scale, wanted, *placement[2:])
    if compile_model and chosen.ray is None:
        upscaler.compile(on_failure=lambda message: notes(quiet)(f"--compile: {message}"))
    if settings.attention in WEIGHTED_METHODS:
        try:
            require_weights(settings.attention)
        except MissingWeightsError as error:
            raise UsageError(f"{error}; or choose another --attention") from None
    if not quiet and rank == 0:
        blocks = f", {settings.block} px blocks" if settings.block else ""
        sparsely = ", sparse" if settings.sparse else ""
        flat = f", flat areas below {settings.flat_floor:g} kept" if settings.flat_floor else ""
        lower = f" (l = {settings.lower_bound:g}{flat}{blocks}{sparsely})" if settings.attention != "none" else ""
        where = f"{upscaler.device} ({str(upscaler.dtype).removeprefix('torch.')})"
        if chosen.ray is not None:
            where = f"Ray workers ({workers or 'as many as fit'}, device {device}, dtype {dtype})"
        part = f", shard {chosen.shard}: {len(jobs)} to do" if chosen.shard is not None else ""
        routed = settings.clean == "auto" and settings.photo_model != "off"
        photo = f"; deblocked JPEG input: {settings.photo_model}" if routed else ""
        note(
            f"{upscaler.name} on {where}, {out_scale}x, {settings.steps} {settings.sampler} steps, "
            f"attention {settings.attention}{lower}{part}{photo}"
        )

    def show(job: Job, record: dict[str, Any]) -> None:
        if json_output:
            typer.echo(json.dumps(record, sort_keys=True))
        elif not quiet:
            width, height = record["size"]
            typer.echo(
                f"{job.image} -> {job.output} ({width}x{height}, {record['seconds']:.1f} s, "
                f"pixel updates {record['update_fraction']:.2f}, work {record['work_fraction']:.2f}"
                + ("" if record["cleaned"] == "none" else f", input {record['cleaned']}")
                + (f" for {record['model']}" if record["cleaned"] != "none" and record["photo_model"] != "off" else "")
                + ")"
            )

    if chosen.ray is not None:
        from ..distributed import WorkerSpec, run_on_ray

        spec = WorkerSpec(
            model if model is not None else upscaler.name,
            settings,
            out_scale,
            seed,
            device=device,
            dtype=dtype,
            threads=max(1, int(cpus_per_worker)),
            save_attention=save_attention,
            max_pixels=max_pixels,
            compile=compile_model,
        )
        with progress_bars(len(jobs), disable=quiet) as (images, _):
            report = run_on_ray(
                jobs, spec, chosen.ray, run_log=run_log, overwrite=overwrite, fail=report_error,
                note=notes(quiet), done=show, progress=images,
            )  # fmt: skip
        if report.tally.failed or batch.tally.failed:
            raise typer.Exit(1)
        return

    def shown(job: Job, done: Upscaled) -> None:
        show(job, done.record)

    with progress_bars(len(jobs), disable=quiet) as (images, steps_bar):
        work = UpscaleJobs(
            upscaler,
            settings,
            out_scale,
            seed,
            save_attention=save_attention,
            max_pixels=max_pixels,
            progress=steps_bar,
            note=notes(quiet),
            run_log=run_log,
        )
        tally = batch.run(jobs, work, chunk=batch_size, done=shown, progress=images)
    if tally.busy:  # not known to be done: say so, whatever --quiet says
        note(
            f"{tally.busy} image(s) not upscaled: another run holds their claims; run again once it ends "
            "(a claim without a heartbeat for 10 minutes is taken over)"
        )
    if tally.failed:
        raise typer.Exit(1)


@contextmanager
def progress_bars(
    total: int, disable: bool
) -> Iterator[tuple[Callable[[int], None], Callable[[int, int], None] | None]]:
    """Progress bars on a terminal's stderr: images finished, and the sampler's steps of the current group."""
    if disable or not sys.stderr.isatty():
        yield (lambda _: None), None
        return
    from tqdm import tqdm

    images = tqdm(total=total, unit="img", file=sys.stderr, leave=False)
    steps = tqdm(total=0, unit="step", file=sys.stderr, leave=False, position=1)

    def step(done: int, of: int) -> None:
        if done < steps.n or steps.total != of:
            steps.reset(total=of)
        steps.update(done - steps.n)

    try:
        yield images.update, step
    finally:
        steps.close()
        images.close()
