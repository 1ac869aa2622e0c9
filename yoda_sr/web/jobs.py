"""Upscaling the page's uploads exactly as `yoda-sr upscale` does, with progress and cancelling.

Each upload is run through ``upscaling.UpscaleJobs``, the CLI's own code: the same settings
resolution and validation, the same reading, seeds, output names and writing. An upload named
``photo.png`` is treated as the argument ``photo.png`` of `yoda-sr upscale photo.png`: its seed is
derived from the base seed and that name, and its output is ``photo_x4.png`` (``--format auto``: the
input's format when it is writable, PNG otherwise). Messages never hold a server path: file names
stand for the uploads and outputs.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SettingError, YodaError
from .library import (
    RUN_LOG,
    WEIGHTED_METHODS,
    FoundImages,
    Job,
    MissingWeightsError,
    Settings,
    Upscaled,
    UpscaleJobs,
    default_suffix,
    error_message,
    models_for_scale,
    output_format,
    parse_block,
    parse_sparse,
    parse_tile,
    plan_jobs,
    require_weights,
)
from .models import Models
from .views import Views, render

LABELS = {
    "model": "Model",
    "scale": "Scale",
    "steps": "Steps",
    "sampler": "Sampler",
    "eta": "Eta",
    "attention": "Attention",
    "lower_bound": "Lower bound",
    "flat_floor": "Flat floor",
    "clean": "Clean",
    "photo_model": "Photo model",
    "sparse": "Sparse",
    "block": "Block",
    "tile": "Tile",
    "tile_overlap": "Tile overlap",
    "tile_batch": "Tile batch",
    "stream": "Stream",
    "seed": "Seed",
    "format": "Format",
}
"""The page's label of each setting (its messages name the field, then the `upscale` flag)."""
ARCHIVE = "yoda-sr-upscale.zip"
KEEP = 7200
"""Seconds a job's files are kept (Gradio's copies too: ``app`` sets its cache to the same age)."""


def message(error: BaseException) -> str:
    """One line for the page: a setting's error under its field and flag, others as they are."""
    if isinstance(error, SettingError):
        flag = "--" + error.setting.replace("_", "-")
        return f"{LABELS.get(error.setting, error.setting)} ({flag}): {error}"
    if isinstance(error, YodaError):
        return str(error).replace("pass --max-pixels", "start `yoda-sr web` with --max-pixels")
    return f"{type(error).__name__}: {error}"


def _whole(setting: str, value: float | int | None) -> int | None:
    if value is None or value == "":
        return None
    number = float(value)
    if not number.is_integer():
        raise SettingError(setting, f"must be a whole number, got {number:g}")
    return int(number)


def _number(value: float | int | str | None) -> float | None:
    return None if value is None or value == "" else float(value)


def _choice(value: str | None) -> str | None:
    text = (value or "").strip()
    return None if text.lower() in ("", "auto") else text


@dataclass
class Form:
    """The page's settings as entered; None (or auto) leaves a setting to the model, as `upscale` does."""

    model: str | None = None
    scale: float | None = None
    steps: float | None = None
    sampler: str | None = None
    eta: float | None = None
    attention: str | None = "auto"
    lower_bound: float | None = None
    flat_floor: float | None = None
    clean: str | None = None
    sparse: str = "on"
    block: str = "auto"
    tile: str = "auto"
    tile_overlap: float | None = 32
    seed: float | None = 0
    format: str = "auto"
    photo_model: str | None = None
    """A checkpoint name or file, off, or empty: the model's."""

    def settings(self) -> Settings:
        """``Settings`` as `upscale`'s options make them (the same parsing and messages)."""
        overlap = _whole("tile_overlap", self.tile_overlap)
        return Settings(
            steps=_whole("steps", self.steps),
            sampler=_choice(self.sampler),
            eta=_number(self.eta),
            attention=_choice(self.attention) or "auto",
            lower_bound=_number(self.lower_bound),
            flat_floor=_number(self.flat_floor),
            clean=(self.clean or "").strip().lower() or None,
            photo_model=(self.photo_model or "").strip() or None,
            tile=parse_tile(str(self.tile or "auto")),
            tile_overlap=32 if overlap is None else overlap,
            sparse=parse_sparse(self.sparse or "on"),
            block=parse_block(str(self.block or "auto")),
        )


@dataclass(frozen=True)
class Upload:
    """An uploaded file (where the server keeps it) and its name on the user's side."""

    path: Path
    name: str

    @classmethod
    def of(cls, path: str | os.PathLike[str], name: str | None = None) -> Upload:
        """An upload whose name is ``name`` (default: the stored file's name), without folders."""
        text = (name or Path(path).name).replace("\\", "/").rsplit("/", 1)[-1].strip()
        return cls(Path(path), text if text not in ("", ".", "..") else "image")


@dataclass(frozen=True)
class Tick:
    """Where a job is: image i of n, the sampler's step and the tile within it."""

    image: int
    images: int
    name: str
    done: int
    total: int
    steps: int

    @property
    def fraction(self) -> float:
        return (self.image + (self.done / self.total if self.total else 0.0)) / max(1, self.images)

    def describe(self) -> str:
        tiles = max(1, self.total // max(1, self.steps))
        step, tile = divmod(self.done, tiles)
        where = f"step {min(step + 1, self.steps)}/{self.steps}" + (f", tile {tile + 1}/{tiles}" if tiles > 1 else "")
        return f"{self.name} ({self.image + 1}/{self.images}): {where}"


class Cancelled(Exception):
    """The job was cancelled; raised from the sampler's progress callback at its next step."""


@dataclass
class Done:
    """One written output and what the page shows of it."""

    name: str
    output: Path
    views: Views
    record: dict[str, Any]
    line: str


@dataclass
class Run:
    """What a job did: outputs, one line per failed upload, the zip of several outputs."""

    done: list[Done] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    archive: Path | None = None
    cancelled: bool = False

    def lines(self) -> str:
        """The page's messages: one line per image, then failures, then a cancel notice."""
        lines = [done.line for done in self.done] + self.failed
        if self.cancelled:
            lines.append("cancelled: the job stopped at its next step; finished images are kept")
        return "\n".join(lines)


class Jobs:
    """Runs the page's uploads (one job at a time: the caller queues them) in ``workdir``."""

    def __init__(
        self, models: Models, workdir: Path, max_pixels: int, note: Callable[[str], None] | None = None
    ) -> None:
        self.models, self.workdir, self.max_pixels = models, workdir, max_pixels
        self.note = note or (lambda _: None)
        """Where remarks for the server's operator go (cancelled jobs)."""

    def run(
        self,
        uploads: Sequence[Upload],
        form: Form,
        progress: Callable[[Tick], None] | None = None,
        stop: threading.Event | None = None,
    ) -> Run:
        """Upscale the uploads; a bad setting raises (``message`` words it), a bad upload is a line."""
        upscaler = self.models.get(form.model)
        scale = _whole("scale", form.scale)
        if scale is not None and scale < 1:
            raise SettingError("scale", f"must be a positive integer, got {scale}")
        if scale is not None and scale > upscaler.scale:
            others = [name for name in models_for_scale(scale) if name != upscaler.name]
            hint = f"; models that do: {', '.join(others)}" if others else "; no registered model does"
            raise SettingError("scale", f"{scale}: {upscaler.name} upscales by at most {upscaler.scale}{hint}")
        scale = scale or upscaler.scale
        settings = upscaler.resolve(form.settings())
        fmt = output_format(form.format or "auto")
        seed = _whole("seed", form.seed) or 0
        if settings.attention in WEIGHTED_METHODS:
            try:
                require_weights(settings.attention)
            except MissingWeightsError as error:
                raise SettingError("attention", f"{error}; or choose another attention") from None
        if not uploads:
            raise YodaError("no image uploaded; choose one or more image files")
        self._clear()
        folder = self.workdir / f"job-{uuid.uuid4().hex}"
        outcome = Run()
        stop = stop or threading.Event()
        work = UpscaleJobs(upscaler, settings, scale, seed, max_pixels=self.max_pixels, note=lambda _: None)
        names: set[str] = set()
        for index, upload in enumerate(uploads):
            if stop.is_set():
                outcome.cancelled = True
                break
            if upload.name in names:
                outcome.failed.append(f"{upload.name}: uploaded twice; rename one of the two files")
                continue
            names.add(upload.name)
            job = self._plan(upload, folder / str(index), scale, fmt)
            last: list[Tick] = []
            work.progress = _ticks(index, len(uploads), upload.name, settings.steps or 1, last, progress, stop)
            for _, result in work([job]):
                if isinstance(result, Cancelled):
                    outcome.cancelled = True
                    self.note(f"cancelled {last[-1].describe() if last else upload.name}")
                elif isinstance(result, Upscaled):
                    outcome.done.append(self._done(upload, job, result, upscaler, settings.clean))
                else:
                    outcome.failed.append(_sanitized(error_message(job.image, result), job, upload))
            shutil.rmtree(job.image.parent, ignore_errors=True)  # the upload's copy
        if len(outcome.done) > 1:
            outcome.archive = _archive(outcome.done, folder / ARCHIVE)
        return outcome

    def _clear(self) -> None:
        """Remove the files of jobs older than ``KEEP`` seconds (a page may still show younger ones)."""
        for old in self.workdir.glob("job-*"):
            try:
                if time.time() - old.stat().st_mtime > KEEP:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass

    def _plan(self, upload: Upload, folder: Path, scale: int, fmt: str) -> Job:
        """The CLI's job for the upload as a file argument, its output in ``folder/out``."""
        source = folder / "in" / upload.name
        source.parent.mkdir(parents=True)
        try:
            os.link(upload.path, source)
        except OSError:
            shutil.copyfile(upload.path, source)
        (folder / "out").mkdir()
        found = FoundImages(images=[(source, Path())])
        return plan_jobs(found, folder / "out", default_suffix(scale, None), fmt)[0]

    def _done(self, upload: Upload, job: Job, done: Upscaled, upscaler: Any, clean_mode: str) -> Done:
        views = render(job.image, job.output, done.result, upscaler, clean_mode, job.output.parent.parent / "view",
                       self.max_pixels)  # fmt: skip
        record = {**done.record, "input": upload.name, "output": job.output.name}
        result = done.result
        height, width = result.image.shape[:2]
        cleaned = "" if result.cleaning.kind == "none" else f", input {result.cleaning.describe()}"
        line = (
            f"{upload.name} -> {job.output.name} ({width}x{height}, {result.seconds:.1f} s, "
            f"pixel updates {result.update_fraction:.2f}, work {result.work_fraction:.2f}{cleaned})"
        )
        return Done(upload.name, job.output, views, record, line)


def _ticks(
    index: int,
    images: int,
    name: str,
    steps: int,
    last: list[Tick],
    progress: Callable[[Tick], None] | None,
    stop: threading.Event,
) -> Callable[[int, int], None]:
    """The sampler's ``progress(done, total)``: reports a Tick (and keeps it in ``last``), and raises
    Cancelled once ``stop`` is set."""

    def tick(done: int, total: int) -> None:
        if stop.is_set():
            raise Cancelled
        last[:] = [Tick(index, images, name, done, total, steps)]
        if progress is not None:
            progress(last[0])

    return tick


def _sanitized(line: str, job: Job, upload: Upload) -> str:
    """A failure line with the server's paths replaced by the upload's and output's names."""
    line = line.replace(str(job.image), upload.name).replace(str(job.output), job.output.name)
    return line.replace(str(job.image.parent.parent), "")


def _archive(done: Sequence[Done], target: Path) -> Path:
    """A zip of the outputs (stored, not recompressed) and their run log lines, named as `upscale` names them."""
    log = "".join(json.dumps(item.record, sort_keys=True) + "\n" for item in done)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        for item in done:
            archive.write(item.output, item.output.name)
        archive.writestr(RUN_LOG, log)
    return target
