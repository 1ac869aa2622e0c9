"""Upscaling image files: output names and formats, the run log, batched sampling.

The work is ``api.Upscaler``; the loop (plan, refuse, skip, go on past failures) is ``batch.Batch``.
Outputs are written atomically with the input's alpha, grey, ICC profile and EXIF, so re-running an
interrupted batch finishes it. With a shard (rank, world size) each process takes every
world-size-th image (in sorted order) on its own device. Each written image appends one JSON line to
``yoda-sr-upscale.jsonl`` in its output folder (``yoda-sr-upscale.I-of-N.jsonl`` for shard I of N,
``shards``).
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import checkpoints
from ..errors import SettingError, YodaError, setting
from ..fsutil import temporary_path
from ..image.io import read_picture, save_png, write_picture
from ..seeds import derive_seed
from ..settings import DEFAULT_MODEL
from .batch import Item
from .files import IMAGE_EXTENSIONS, FoundImages
from .shards import RUN_LOG_STEM

if TYPE_CHECKING:
    from ..api import Resolved, Result, Settings, Upscaler
    from ..image.io import Picture

RUN_LOG = f"{RUN_LOG_STEM}.jsonl"
PILLOW_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}
"""Output extensions and the format each is written in (anything else becomes PNG)."""
_EXTENSIONS = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tiff": ".tif"}
OWN_ENDINGS = (".attention.png",)
"""Names a folder's images may end with that are outputs of an earlier run, not inputs."""


MAX_SUFFIX_BYTES = 64
"""The longest ``suffix``: an output's name (stem, suffix, extension) must stay within 255 bytes."""


def check_suffix(suffix: str) -> str:
    """A name suffix must stay a part of a file name: no folder separators, nothing hidden."""
    if any(char in suffix for char in ("/", "\\", "\0")) or suffix in (".", ".."):
        raise SettingError("suffix", f"{suffix!r} would leave the file name; use letters, digits, '_', '-' or '.'")
    if len(os.fsencode(suffix)) > MAX_SUFFIX_BYTES:
        raise SettingError(
            "suffix",
            f"is {len(os.fsencode(suffix))} bytes long; use at most {MAX_SUFFIX_BYTES} (file names end at 255)",
        )
    return suffix


def models_for_scale(scale: int) -> list[str]:
    """Registered denoisers that upscale by ``scale`` or more."""

    names = []
    for name, entry in checkpoints.load_registry().items():
        if entry.kind == "denoiser" and (entry.scale or 0) >= scale:
            names.append(name)
    return names


def output_scale(model: str | None, scale: int | None) -> int | None:
    """The scale the outputs are named for (``_x<scale>``), from the model's metadata alone: no weights
    are read and torch is not imported, so a run whose outputs all exist is decided at once. ``scale``
    is checked against the model's as :func:`load` checks it; None when the metadata does not say
    (then only :func:`load` can tell, and reports what is wrong with the file)."""

    if scale is not None and scale < 1:
        raise SettingError("scale", f"must be a positive integer, got {scale}")
    path, name = checkpoints.resolve_model_file(model or DEFAULT_MODEL)
    most = checkpoints.read_metadata(path).get("scale")
    if not isinstance(most, int) or isinstance(most, bool) or most < 1:
        return None
    if scale is not None and scale > most:
        others = [other for other in models_for_scale(scale) if other != name]
        hint = f"; models that do: {', '.join(others)}" if others else "; no registered model does"
        raise SettingError("scale", f"{scale}: {name} upscales by at most {most}{hint}")
    return scale or most


def load(
    model: str | None, device: str, dtype: str, scale: int | None, settings: Settings, local_rank: int, world: int
) -> tuple[Upscaler, Resolved, int]:
    """The upscaler (on this rank's device), its resolved settings and the output scale."""
    from ..api import Upscaler  # torch: loaded once there is an image to upscale

    if scale is not None and scale < 1:
        raise SettingError("scale", f"must be a positive integer, got {scale}")
    if world > 1 and device == "auto":
        import torch

        device = f"cuda:{local_rank % max(torch.cuda.device_count(), 1)}" if torch.cuda.is_available() else "cpu"
    upscaler = Upscaler.from_pretrained(model, device=device, dtype=dtype)
    if scale is not None and scale > upscaler.scale:
        others = [name for name in models_for_scale(scale) if name != upscaler.name]
        hint = f"; models that do: {', '.join(others)}" if others else "; no registered model does"
        raise SettingError("scale", f"{scale}: {upscaler.name} upscales by at most {upscaler.scale}{hint}")
    return upscaler, upscaler.resolve(settings), scale or upscaler.scale


@dataclass
class Job(Item):
    """One image to upscale; ``outputs`` holds its one output."""

    log_dir: Path = Path()
    """Where its run log line goes: the output folder (or the input's folder by default)."""

    @property
    def output(self) -> Path:
        return self.outputs[0]


def default_suffix(scale: int, out: Path | None) -> str:
    """Appended to output names: ``_x<scale>`` beside the inputs, nothing in an output folder."""
    return f"_x{scale}" if out is None else ""


def ignored_endings(suffix: str) -> tuple[str, ...]:
    """Names in input folders that are this run's own outputs (so a re-run does not upscale them)."""
    own = tuple(f"{suffix}{extension}" for extension in IMAGE_EXTENSIONS) if suffix else ()
    return (*own, *OWN_ENDINGS, RUN_LOG)


def output_folder(out: Path | None) -> Path | None:
    """The folder ``-o`` names (None for outputs beside the inputs or a single output file)."""
    if out is None or (not out.is_dir() and out.suffix.lower() in IMAGE_EXTENSIONS):
        return None
    return out


def check_out(out: Path | None, run_log: str = RUN_LOG) -> None:
    """Refuse an output that cannot work before any image is computed: a file that is not an image
    name, an image format we cannot write, or a folder we cannot write into (or whose run log
    ``run_log`` is a symbolic link or a folder). Folders made to find out are removed again."""

    if out is None:
        return
    if out.exists() and not out.is_dir() and out.suffix.lower() not in IMAGE_EXTENSIONS:
        raise SettingError("out", f"{out} is a file that is not an image; give an image name or a folder")
    folder = out if output_folder(out) is not None else out.parent
    if folder is not out and out.suffix.lower() not in PILLOW_FORMATS:
        writable = ", ".join(sorted(PILLOW_FORMATS))
        raise SettingError("out", f"{out}: cannot write {out.suffix} files; name it with one of {writable}")
    if (folder / run_log).is_symlink():
        raise SettingError("out", f"{folder / run_log} is a symbolic link; remove it (the run log is never followed)")
    if (folder / run_log).is_dir():
        raise SettingError("out", f"{folder / run_log} is a folder, where the run log goes; remove or rename it")
    missing = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temporary_path(folder / "probe")
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as error:
        raise SettingError("out", f"{folder}: cannot write there ({error.strerror or error})") from None
    finally:  # a refusal later (a setting the model rejects) leaves nothing; writers create their folders
        for path in missing:
            try:
                path.rmdir()
            except OSError:
                break


def plan_jobs(found: FoundImages, out: Path | None, suffix: str, fmt: str) -> list[Job]:
    """A job per image found, in the order ranks share them: by output folder, then relative path.

    ``out`` is None (beside each input), an image file name (one input) or a folder (mirrored).
    """
    out_is_file = out is not None and not out.is_dir() and out.suffix.lower() in IMAGE_EXTENSIONS
    if out is not None and out_is_file and len(found.images) + len(found.missing) > 1:
        raise SettingError("out", f"{out} is a file name, but there are several images; give a folder")
    jobs = []
    for image, relative in found.images:
        if fmt != "auto":
            extension = _EXTENSIONS[fmt]
        else:
            extension = image.suffix.lower() if image.suffix.lower() in PILLOW_FORMATS else ".png"
        name = f"{image.stem}{suffix}{extension}"
        if out is not None and out_is_file:
            output, log_dir = out, out.parent
        elif out is None:
            output, log_dir = image.with_name(name), image.parent
        else:
            output, log_dir = out / relative / name, out
            _inside(out, output)
        jobs.append(Job(image, (relative / image.name).as_posix(), [output], log_dir=log_dir))
    return sorted(jobs, key=lambda job: (str(job.log_dir), job.key))


def attention_map_path(output: Path) -> Path:
    """Where ``--save-attention`` puts an output's map: ``a.attention.png`` beside ``a.png``, and
    ``a.jpg.attention.png`` beside ``a.jpg`` (outputs told apart by extension keep apart maps)."""
    kind = "" if output.suffix.lower() == ".png" else output.suffix.lower()
    return output.with_name(f"{output.stem}{kind}.attention.png")


def _inside(out: Path, output: Path) -> None:
    """Refuse an output whose folder under ``out`` is a symbolic link out of it (outputs never leave
    the output folder)."""
    real = Path(os.path.realpath(output.parent))
    if not real.is_relative_to(os.path.realpath(out)):
        raise SettingError(
            "out",
            f"{output.parent} leads to {real}, outside {out} (a symbolic link); remove the link or write elsewhere",
        )


def write_log(log_dir: Path, record: dict[str, Any], name: str = RUN_LOG) -> None:
    """Append one JSON line to the run log ``name`` (a single O_APPEND write, safe across ranks)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    path = log_dir / name
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise YodaError(f"{path} is a symbolic link; remove it (the run log is never followed)") from None
        raise
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)


@dataclass
class Upscaled:
    """One written output: the sampler's result and the run log's record of it."""

    result: Result
    record: dict[str, Any]


class UpscaleJobs:
    """Batch work (``batch.Batch.run``): reads a chunk of jobs, samples same-size images together,
    writes each output and its line in the run log ``run_log`` (None: the caller writes the records).
    ``progress(done, total)`` follows the sampler's steps."""

    def __init__(
        self,
        upscaler: Upscaler,
        settings: Resolved,
        scale: int,
        seed: int,
        *,
        save_attention: bool = False,
        max_pixels: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        note: Callable[[str], None] | None = None,
        run_log: str | None = RUN_LOG,
    ) -> None:
        if max_pixels is not None and max_pixels < 1:
            raise SettingError("max_pixels", f"must be at least 1 (pixels of the largest input), got {max_pixels}")
        self.upscaler = upscaler
        self.settings = settings
        self.scale = scale
        self.seed = seed
        self.save_attention = save_attention
        self.max_pixels = max_pixels
        self.progress = progress
        self.note = note
        self.run_log = run_log

    def __call__(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, Upscaled | BaseException]]:

        groups: dict[tuple[object, ...], list[tuple[Job, Picture]]] = {}
        for job in jobs:
            try:
                kwargs = {} if self.max_pixels is None else {"max_pixels": self.max_pixels}
                picture = read_picture(job.image, **kwargs)
            except Exception as error:
                yield job, error
                continue
            if picture.alpha is not None and PILLOW_FORMATS.get(job.output.suffix.lower()) == "JPEG":
                yield (
                    job,
                    YodaError(  # refused before the model runs, not after
                        f"{job.output}: JPEG cannot store transparency; choose {setting('format', 'png')}, webp or tiff"
                    ),
                )
                continue
            if picture.frames > 1 and self.note is not None:
                self.note(f"{job.image} has {picture.frames} frames; only the first is upscaled")
            groups.setdefault((*picture.rgb.shape, str(picture.rgb.dtype)), []).append((job, picture))
        for group in groups.values():
            seeds = [derive_seed(self.seed, job.key) for job, _ in group]
            try:
                results = self.upscaler.upscale_batch(
                    [picture.rgb for _, picture in group],
                    seeds=seeds,
                    scale=self.scale,
                    settings=self.settings,
                    progress=self.progress,
                )
            except Exception as error:
                for job, _ in group:
                    yield job, error
                continue
            for (job, picture), result, seed in zip(group, results, seeds, strict=True):
                try:
                    save(job.output, picture, result, self.save_attention)
                    record = self.record(job, result, seed)
                    if self.run_log is not None:
                        write_log(job.log_dir, record, self.run_log)
                except Exception as error:
                    yield job, error
                    continue
                yield job, Upscaled(result, record)

    def record(self, job: Job, result: Result, seed: int) -> dict[str, Any]:
        """The run log's line for one output."""
        upscaler = self.upscaler
        return {
            "input": str(job.image),
            "output": str(job.output),
            "model": result.model or upscaler.name,
            "model_sha256": result.model_sha256 or upscaler.loaded.sha256,
            "seed": seed,
            "base_seed": self.seed,
            "scale": self.scale,
            "steps": result.steps,
            "sampler": result.sampler,
            "eta": self.settings.eta,
            "attention": result.attention_method,
            "lower_bound": result.lower_bound,
            "flat_floor": result.flat_floor,
            "clean": self.settings.clean,
            "photo_model": self.settings.photo_model,
            "cleaned": result.cleaning.describe(),
            "tile": result.tile,
            "device": str(upscaler.device),
            "dtype": result.dtype,
            "update_fraction": round(result.update_fraction, 4),
            "work_fraction": round(result.work_fraction, 4),
            "sparse": result.sparse,
            "block": result.block,
            "seconds": round(result.seconds, 3),
            "size": [int(result.image.shape[1]), int(result.image.shape[0])],
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }


def save(output: Path, picture: Picture, result: Result, save_attention: bool) -> None:
    """Write the output (and its attention map) atomically, restoring alpha, grey, ICC and EXIF."""
    from ..attention.render import heatmap  # torch, as for the sampling that came before
    from ..image.imaging import resize_channel

    image = result.image
    alpha = None
    if picture.alpha is not None:
        alpha = resize_channel(picture.alpha, image.shape[:2])
    output.parent.mkdir(parents=True, exist_ok=True)
    write_picture(
        output,
        image,
        alpha=alpha,
        grey=picture.grey,
        icc_profile=picture.icc_profile,
        exif=picture.exif,
        format=PILLOW_FORMATS.get(output.suffix.lower(), "PNG"),
    )
    if save_attention and result.attention is not None:
        save_png(heatmap(result.attention), attention_map_path(output))
