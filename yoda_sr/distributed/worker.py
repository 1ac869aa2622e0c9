"""What one Ray worker (an actor) runs: the model loaded once, then one image per call, written by
yoda-sr's own writer.

Each call is ``upscaling.UpscaleJobs`` on one planned job, the code the plain CLI runs: the image's
seed comes from the run's seed and the image's key (its relative path), never from the worker, and
the output is written atomically with its alpha, 16 bits, ICC profile and EXIF under the name the
CLI gives it. The record goes back to the driver, which writes the run log. This module does not
import Ray: the driver wraps :class:`UpscaleWorker` in ``ray.remote``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..jobs.batch import error_message
from ..jobs.upscaling import UpscaleJobs
from ..runtime.cpu import tune_process

if TYPE_CHECKING:
    from ..jobs.upscaling import Job
    from ..settings import Resolved


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker loads and how it upscales (the same for all of them)."""

    model: str | None
    settings: Resolved
    """Resolved on the driver (``Upscaler.resolve``), so every worker samples alike."""
    scale: int
    seed: int
    device: str = "auto"
    dtype: str = "auto"
    threads: int = 1
    """Torch threads per worker (its CPUs)."""
    save_attention: bool = False
    max_pixels: int | None = None
    compile: bool = False


@dataclass
class Outcome:
    """One call's result: a record (written), an error line (failed), or ``kept`` (the output was
    already there: an earlier attempt wrote it before its worker died)."""

    key: str
    record: dict[str, Any] | None = None
    error: str | None = None
    kept: bool = False
    notes: list[str] = field(default_factory=list)


class UpscaleWorker:
    """The actor's class: holds one loaded ``Upscaler``; ``upscale`` does one job."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.error: str | None = None
        self.notes: list[str] = []
        self.jobs: UpscaleJobs | None = None
        try:
            self.jobs = self._load(spec)
        except Exception as error:  # reported by ready(), so the driver stops with one line
            self.error = str(error) if str(error) else type(error).__name__

    def _load(self, spec: WorkerSpec) -> UpscaleJobs:
        import torch

        from ..api import Upscaler

        tune_process()
        torch.set_num_threads(max(1, spec.threads))
        upscaler = Upscaler.from_pretrained(spec.model, device=spec.device, dtype=spec.dtype)
        if spec.compile:
            upscaler.compile(on_failure=self.notes.append)
        return UpscaleJobs(
            upscaler,
            spec.settings,
            spec.scale,
            spec.seed,
            save_attention=spec.save_attention,
            max_pixels=spec.max_pixels,
            note=self.notes.append,
            run_log=None,
        )

    def ready(self) -> dict[str, Any]:
        """Who and where this worker is, and why it cannot work (``error``), if it cannot."""
        import yoda_sr

        device = str(self.jobs.upscaler.device) if self.jobs is not None else None
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "device": device,
            "version": yoda_sr.__version__,
            "module": yoda_sr.__file__,
            "error": self.error,
        }

    def upscale(self, job: Job, keep_existing: bool) -> Outcome:
        """Upscale one job; with ``keep_existing`` an output already there is kept, not rewritten."""
        outcome = Outcome(job.key)
        if self.jobs is None:
            outcome.error = f"{job.image}: the worker could not load the model ({self.error})"
            return outcome
        if keep_existing and all(output.exists() for output in job.pending):
            outcome.kept = True
            return outcome
        try:
            for _, done in self.jobs([job]):
                if isinstance(done, BaseException):
                    outcome.error = error_message(job.image, done)
                else:
                    outcome.record = {**done.record, "host": socket.gethostname()}
        except Exception as error:
            outcome.error = error_message(job.image, error)
        outcome.notes = list(self.notes)
        self.notes.clear()
        return outcome
