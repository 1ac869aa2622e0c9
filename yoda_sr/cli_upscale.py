"""`yoda-sr upscale`: files, folders and globs in; super-resolved images out, safely.

Parsing and output planning live here; the work is ``api.Upscaler``. Outputs are written
atomically, existing ones are skipped (so re-running an interrupted batch finishes it), inputs are
never overwritten, and a failing image costs one line while the batch goes on. Under ``torchrun``
each rank takes every WORLD_SIZE-th image (in sorted order) on its own device.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import typer

from .errors import UsageError, YodaError
from .files import IMAGE_EXTENSIONS, find_images

RUN_LOG = "yoda-sr-upscale.jsonl"
_PILLOW_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}
"""Output extensions and the format each is written in (anything else becomes PNG)."""
FORMATS = ("auto", "png", "jpg", "webp", "tiff")


@dataclass
class Job:
    image: Path
    key: str
    """The image's path relative to its input argument (seeds and sharding use it)."""
    output: Path
    log_dir: Path


def _expand(arguments: list[Path]) -> list[Path]:
    """Expand glob patterns the shell left alone (quoted, or on Windows)."""
    expanded: list[Path] = []
    for argument in arguments:
        text = str(argument)
        if not argument.exists() and any(char in text for char in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            expanded.extend(Path(match) for match in matches) if matches else expanded.append(argument)
        else:
            expanded.append(argument)
    return expanded


def _shard() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    try:
        return (
            int(os.environ.get("RANK", "0")),
            int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")),
        )
    except ValueError:
        raise UsageError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)") from None


def _extension(fmt: str) -> str:
    return {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tiff": ".tif"}[fmt]


def _plan(
    arguments: list[Path], out: Path | None, suffix: str, fmt: str, recursive: bool
) -> tuple[list[Job], list[str], list[Path]]:
    """Jobs for every image found, plus notes and missing arguments."""
    own = tuple(f"{suffix}{extension}" for extension in IMAGE_EXTENSIONS) if suffix else ()
    search = find_images(arguments, recursive, ignore_endings=(*own, ".attention.png"))
    out_is_file = out is not None and not out.is_dir() and out.suffix.lower() in IMAGE_EXTENSIONS
    if out_is_file and len(search.images) + len(search.missing) > 1:
        raise UsageError(f"--out {out} is a file name, but there are several images; give a folder")
    jobs = []
    for image, relative in search.images:
        key = (relative / image.name).as_posix()
        if fmt != "auto":
            extension = _extension(fmt)
        else:
            extension = image.suffix.lower() if image.suffix.lower() in _PILLOW_FORMATS else ".png"
        if out_is_file:
            output, log_dir = out, out.parent
        elif out is None:
            output, log_dir = image.with_name(f"{image.stem}{suffix}{extension}"), image.parent
        else:
            output, log_dir = out / relative / f"{image.stem}{suffix}{extension}", out
        jobs.append(Job(image, key, output, log_dir))
    return jobs, search.notes, search.missing


def _write_log(log_dir: Path, record: dict) -> None:
    """Append one JSON line to the run log (a single O_APPEND write, safe across ranks)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    descriptor = os.open(log_dir / RUN_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)


def _models_for_scale(scale: int) -> list[str]:
    from . import checkpoints

    names = []
    for name, entry in checkpoints.load_registry().items():
        if entry.kind == "denoiser" and (entry.scale or 0) >= scale:
            names.append(name)
    return names


def run(
    ctx: typer.Context,
    inputs: list[Path],
    out: Path | None,
    scale: int | None,
    model: str | None,
    steps: int | None,
    sampler: str | None,
    eta: float | None,
    attention: str,
    lower_bound: float | None,
    seed: int,
    device: str,
    dtype: str,
    tile: str,
    tile_overlap: int,
    batch_size: int,
    recursive: bool,
    suffix: str | None,
    fmt: str,
    overwrite: bool,
    save_attention: bool,
    json_output: bool,
    quiet: bool,
    max_pixels: int | None,
) -> None:
    """The body of `yoda-sr upscale` (see cli.upscale for the options)."""
    from .api import Settings, Upscaler
    from .seeds import derive_seed

    debug = bool(ctx.find_root().params.get("debug"))
    fmt = fmt.strip().lower()
    if fmt == "jpeg":
        fmt = "jpg"
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    if scale is not None and scale < 1:
        raise UsageError(f"--scale must be a positive integer, got {scale}")
    tile_value: int | str = tile.strip().lower()
    if tile_value != "auto":
        if not str(tile_value).isdecimal():
            raise UsageError(f"--tile must be auto, 0 (off) or a size in pixels, got {tile!r}")
        tile_value = int(tile_value)
    rank, world, local_rank = _shard()
    device_name = device
    if world > 1 and device == "auto":
        import torch

        device_name = f"cuda:{local_rank % max(torch.cuda.device_count(), 1)}" if torch.cuda.is_available() else "cpu"

    upscaler = Upscaler.from_pretrained(model, device=device_name, dtype=dtype)
    native = upscaler.scale
    if scale is not None and scale > native:
        others = [name for name in _models_for_scale(scale) if name != upscaler.name]
        hint = f"; models that do: {', '.join(others)}" if others else "; no registered model does"
        raise UsageError(f"--scale {scale}: {upscaler.name} upscales by at most {native}{hint}")
    out_scale = scale or native
    settings = upscaler.resolve(
        Settings(
            steps=steps,
            sampler=sampler,
            eta=eta,
            attention=attention,
            lower_bound=lower_bound,
            tile=tile_value,
            tile_overlap=tile_overlap,
        )
    )
    if suffix is None:
        suffix = f"_x{out_scale}" if out is None else ""
    jobs, notes, missing = _plan(_expand(inputs), out, suffix, fmt, recursive)
    if not quiet:
        for note in notes:
            typer.echo(f"yoda-sr: {note}", err=True)
        if rank == 0:
            typer.echo(
                f"yoda-sr: {upscaler.name} on {upscaler.device} ({str(upscaler.dtype).removeprefix('torch.')}), "
                f"{out_scale}x, {settings.steps} {settings.sampler} steps, attention {settings.attention}"
                + (f" (l = {settings.lower_bound:g})" if settings.attention != "none" else ""),
                err=True,
            )
    failures = 0
    for path in missing:
        typer.echo(f"yoda-sr: error: {path}: no such file or folder", err=True)
        failures += 1
    if not jobs and not missing:
        raise YodaError(f"no images found in {', '.join(map(str, inputs))}")
    inputs_resolved = {job.image.resolve() for job in jobs}
    claimed: dict[Path, Path] = {}
    pending: list[Job] = []
    for index, job in enumerate(sorted(jobs, key=lambda j: (str(j.log_dir), j.key))):
        target = job.output.resolve()
        problem = None
        if target in inputs_resolved:
            problem = (
                f"{job.image}: its output {job.output} is an input image; refusing to overwrite it (use --suffix or -o)"
            )
        elif target in claimed:
            problem = f"{job.image}: its output {job.output} is also that of {claimed[target]}; use --format or -o"
        claimed.setdefault(target, job.image)
        if index % world != rank:
            continue
        if problem:
            typer.echo(f"yoda-sr: error: {problem}", err=True)
            failures += 1
        elif job.output.exists() and not overwrite:
            if not quiet:
                typer.echo(f"yoda-sr: skipped {job.image}: {job.output} exists (use --overwrite)", err=True)
        else:
            pending.append(job)

    from tqdm import tqdm

    bar = tqdm(total=len(pending), unit="img", file=sys.stderr, disable=quiet or not sys.stderr.isatty(), leave=False)
    for start in range(0, len(pending), batch_size):
        chunk = pending[start : start + batch_size]
        failures += _process(
            chunk,
            upscaler,
            settings,
            out_scale,
            seed,
            derive_seed,
            save_attention,
            json_output,
            quiet,
            max_pixels,
            debug,
            bar,
        )
    bar.close()
    if failures:
        raise typer.Exit(1)


def _process(
    chunk,
    upscaler,
    settings,
    out_scale,
    base_seed,
    seed_for,
    save_attention,
    json_output,
    quiet,
    max_pixels,
    debug,
    bar,
) -> int:
    """Read, upscale and write one chunk of jobs (same-size images share the sampler loop)."""
    from tqdm import tqdm

    from .imageio import read_picture

    failures = 0
    pictures = []
    for job in chunk:
        try:
            kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
            pictures.append((job, read_picture(job.image, **kwargs)))
        except YodaError as error:
            if debug:
                raise
            message = str(error)
            typer.echo(
                f"yoda-sr: error: {message if str(job.image) in message else f'{job.image}: {message}'}", err=True
            )
            failures += 1
            bar.update(1)
    groups: dict[tuple, list] = {}
    for job, picture in pictures:
        groups.setdefault(picture.rgb.shape + (str(picture.rgb.dtype),), []).append((job, picture))
    for group in groups.values():
        inner = None if bar.disable else tqdm(total=0, unit="step", file=sys.stderr, leave=False, position=1)

        def progress(done: int, total: int, inner=inner) -> None:
            if inner is not None:
                inner.total = total
                inner.update(done - inner.n)

        try:
            seeds = [seed_for(base_seed, job.key) for job, _ in group]
            results = upscaler.upscale_batch(
                [p.rgb for _, p in group], seeds=seeds, scale=out_scale, settings=settings, progress=progress
            )
        except Exception as error:
            if debug:
                raise
            for job, _ in group:
                _fail(job, error)
            failures += len(group)
            bar.update(len(group))
            continue
        for (job, picture), result, seed in zip(group, results, seeds, strict=True):
            try:
                _save(job, picture, result, save_attention)
            except Exception as error:
                if debug:
                    raise
                _fail(job, error)
                failures += 1
                bar.update(1)
                continue
            record = {
                "input": str(job.image),
                "output": str(job.output),
                "model": upscaler.name,
                "model_sha256": upscaler.loaded.sha256,
                "seed": seed,
                "base_seed": base_seed,
                "scale": out_scale,
                "steps": result.steps,
                "sampler": result.sampler,
                "eta": settings.eta,
                "attention": result.attention_method,
                "lower_bound": result.lower_bound,
                "tile": result.tile,
                "device": str(upscaler.device),
                "dtype": result.dtype,
                "update_fraction": round(result.update_fraction, 4),
                "seconds": round(result.seconds, 3),
                "size": [int(result.image.shape[1]), int(result.image.shape[0])],
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            _write_log(job.log_dir, record)
            if json_output:
                typer.echo(json.dumps(record, sort_keys=True))
            elif not quiet:
                height, width = result.image.shape[:2]
                typer.echo(
                    f"{job.image} -> {job.output} ({width}x{height}, {result.seconds:.1f} s, "
                    f"pixel updates {result.update_fraction:.2f})"
                )
            bar.update(1)
        if inner is not None:
            inner.close()
    return failures


def _fail(job: Job, error: Exception) -> None:
    message = str(error) if isinstance(error, YodaError) else f"{type(error).__name__}: {error}"
    typer.echo(f"yoda-sr: error: {job.image}: {message}", err=True)


def _save(job: Job, picture, result, save_attention: bool) -> None:
    """Write the output (and its attention map) atomically, restoring alpha, grey, ICC and EXIF."""
    from .imageio import write_picture

    image = result.image
    height, width = image.shape[:2]
    alpha = None
    if picture.alpha is not None:
        alpha = _resize_channel(picture.alpha, (height, width))
    pillow_format = _PILLOW_FORMATS.get(job.output.suffix.lower(), "PNG")
    job.output.parent.mkdir(parents=True, exist_ok=True)
    write_picture(
        job.output,
        image,
        alpha=alpha,
        grey=picture.grey,
        icc_profile=picture.icc_profile,
        exif=picture.exif,
        format=pillow_format,
    )
    if save_attention and result.attention is not None:
        from .attention.render import heatmap
        from .imageio import save_png

        save_png(heatmap(result.attention), job.output.with_name(f"{job.output.stem}.attention.png"))


def _resize_channel(channel, size: tuple[int, int]):
    """Upscale an alpha channel with the project's bicubic (kept in its dtype)."""
    from .imaging import resize_bicubic, to_array, to_tensor

    return to_array(resize_bicubic(to_tensor(channel), size=size), channel.dtype)
