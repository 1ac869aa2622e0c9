"""The Ray driver: planned upscale jobs run on model-holding actors, a bounded number in flight.

The driver joins a Ray cluster (or starts one on this machine, listening on 127.0.0.1 only), starts
``workers`` actors (``worker.UpscaleWorker``: the model loaded once each) and feeds them the jobs a
:class:`~yoda_sr.jobs.batch.Batch` planned, at most ``in_flight`` per worker, to whichever has the
fewest. It claims each output before sending it out (``fsutil.claim``, as the CLI does), writes each
record to the run log itself (one writer per folder), and counts what was done, kept and failed.

A worker that dies (killed, out of memory, its machine gone) is replaced and its images are retried
on any worker, up to ``retries`` more times each; after that an image fails with one line. A retry
keeps an output that an earlier attempt finished (unless overwriting), so nothing is written twice
or half. On Ctrl-C (or any error that stops the job) the workers are killed, the temporary files of
the images they held are removed and the claims released.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import YodaError
from ..fsutil import claim_all, release, temporaries_of
from ..jobs.batch import Tally
from ..jobs.upscaling import RUN_LOG, Job, write_log
from .cluster import RayOptions, connect, import_ray, worker_count
from .worker import Outcome, UpscaleWorker, WorkerSpec


@dataclass
class RayReport:
    """What a Ray run did, and what it cost."""

    tally: Tally = field(default_factory=Tally)
    failures: list[str] = field(default_factory=list)
    retried: int = 0
    """Attempts repeated because a worker died."""
    replaced: int = 0
    """Workers started again after one died."""
    workers: list[dict[str, Any]] = field(default_factory=list)
    """``UpscaleWorker.ready()`` of each worker that started (host, pid, device, version, module)."""
    startup_seconds: float = 0.0
    """From the start until the first worker was ready (Ray started or joined, a model loaded)."""
    seconds: float = 0.0
    driver_seconds: float = 0.0
    """Time the driver spent on its own work (claims, sending, records), not waiting for Ray."""


@dataclass
class _Slot:
    """One worker position: its current actor (replaced when it dies) and the images it holds."""

    number: int
    actor: Any = None
    generation: int = 0
    ready: bool = False
    busy: int = 0
    failed_starts: int = 0
    retired: bool = False
    pid: int | None = None
    """The current actor's process id, when it runs on this machine (to wait for its end on a stop)."""


class _Run:
    """One job on Ray: the slots, the queue, the images out, the claims held."""

    def __init__(
        self,
        ray: ModuleType,
        spec: WorkerSpec,
        options: RayOptions,
        report: RayReport,
        *,
        run_log: str,
        overwrite: bool,
        fail: Callable[[str], None],
        note: Callable[[str], None],
        done: Callable[[Job, dict[str, Any]], None],
        progress: Callable[[int], None],
    ) -> None:
        self.ray, self.spec, self.options, self.report = ray, spec, options, report
        self.run_log, self.overwrite = run_log, overwrite
        self.fail, self.note, self.done, self.progress = fail, note, done, progress
        resources = {"num_cpus": options.cpus_per_worker, "num_gpus": options.gpus_per_worker}
        self.actor_class = ray.remote(UpscaleWorker).options(max_restarts=0, max_task_retries=0, **resources)
        self.slots: list[_Slot] = []
        self.queue: deque[tuple[Job, int]] = deque()
        self.waiting: dict[Any, tuple[_Slot, int, Job | None, int]] = {}
        """ObjectRef -> (slot, its generation, the job or None for ``ready``, the attempt)."""
        self.claims: dict[str, list[Path]] = {}

    def start(self, slot: _Slot) -> None:
        if slot.actor is not None:
            self.ray.kill(slot.actor, no_restart=True)
        slot.actor = self.actor_class.remote(self.spec)
        slot.generation += 1
        slot.ready, slot.busy, slot.pid = False, 0, None
        self.waiting[slot.actor.ready.remote()] = (slot, slot.generation, None, 0)

    def run(self, jobs: Sequence[Job], workers: int, started: float) -> None:
        self.queue.extend((job, 0) for job in jobs)
        self.slots = [_Slot(number) for number in range(workers)]
        for slot in self.slots:
            self.start(slot)
        waited, begun = 0.0, time.perf_counter()
        while self.busy():
            self.dispatch()
            if not self.waiting:
                break
            before = time.perf_counter()
            finished, _ = self.ray.wait(list(self.waiting), num_returns=1, timeout=60)
            waited += time.perf_counter() - before
            if not finished:
                starting = sum(not slot.ready and not slot.retired for slot in self.slots)
                if starting:
                    self.note(f"waiting for {starting} Ray workers to start (does the cluster have room for them?)")
            for ref in finished:
                self.settle(ref, started)
        for job, _ in self.queue:
            self.fail(f"{job.image}: not upscaled: no Ray worker could be started")
            self.release(job)
        self.report.driver_seconds = time.perf_counter() - begun - waited

    def busy(self) -> bool:
        """Whether images are out, or queued with a worker left to take them."""
        if any(job is not None for _, _, job, _ in self.waiting.values()):
            return True
        return bool(self.queue) and any(not slot.retired for slot in self.slots)

    def dispatch(self) -> None:
        """Send queued images to the ready workers with the fewest in flight."""
        while self.queue:
            ready = [slot for slot in self.slots if slot.ready and slot.busy < self.options.in_flight]
            if not ready:
                return
            slot = min(ready, key=lambda candidate: candidate.busy)
            job, attempt = self.queue.popleft()
            if attempt == 0 and not self.take(job):
                continue
            keep = attempt > 0 and not self.overwrite
            self.waiting[slot.actor.upscale.remote(job, keep)] = (slot, slot.generation, job, attempt)
            slot.busy += 1

    def take(self, job: Job) -> bool:
        """Claim the job's outputs (False: another run holds one, or wrote it meanwhile)."""
        held = claim_all(job.pending)
        if held is not None and (self.overwrite or not all(out.exists() for out in job.pending)):
            self.claims[job.key] = held
            return True
        for path in held or []:
            release(path)
        self.note(f"skipped {job.image}: another run is writing its output, or wrote it meanwhile")
        self.report.tally.skipped += 1
        return False

    def release(self, job: Job) -> None:
        for path in self.claims.pop(job.key, []):
            release(path)

    def settle(self, ref: Any, started: float) -> None:
        slot, generation, job, attempt = self.waiting.pop(ref)
        current = generation == slot.generation
        try:
            value = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as error:  # a bug in the worker's code, not a death
            if job is None:
                raise YodaError(f"a Ray worker failed to start: {error}") from None
            self.finish(job, Outcome(job.key, error=f"{job.image}: {error}"))
        except self.ray.exceptions.RayError as error:
            self.died(slot, current, job, attempt, error)
        else:
            if job is None:
                self.started(slot, value, started)
                return
            self.finish(job, value)
        if job is not None and current:
            slot.busy = max(0, slot.busy - 1)

    def started(self, slot: _Slot, info: dict[str, Any], started: float) -> None:
        import yoda_sr

        host = info.get("host")
        if info.get("error"):
            raise YodaError(f"a Ray worker on {host} cannot work: {info['error']}")
        if info.get("version") != yoda_sr.__version__:
            raise YodaError(
                f"the Ray worker on {host} runs yoda-sr {info.get('version')}, this driver {yoda_sr.__version__}; "
                "install the same version on every node"
            )
        slot.ready, slot.failed_starts = True, 0
        slot.pid = int(info["pid"]) if host == socket.gethostname() else None
        self.report.workers.append(info)
        if not self.report.startup_seconds:
            self.report.startup_seconds = time.perf_counter() - started

    def died(self, slot: _Slot, current: bool, job: Job | None, attempt: int, error: BaseException) -> None:
        """A worker is gone: start another in its place (once per death) and retry its images."""
        reason = type(error).__name__
        gone = slot.pid if current else None
        if current and not slot.retired:
            slot.failed_starts += job is None
            if slot.failed_starts > self.options.retries:
                slot.retired = True
                self.ray.kill(slot.actor, no_restart=True)
                times = slot.failed_starts
                self.note(f"Ray worker {slot.number} died {times} times while starting ({reason}); not started again")
            else:
                self.note(f"Ray worker {slot.number} died ({reason}); starting another")
                self.report.replaced += 1
                self.start(slot)
        if job is None:
            return
        _wait_for_exit([gone] if gone is not None else [], timeout=10)
        _remove_temporaries(job)
        if attempt < self.options.retries:
            self.report.retried += 1
            self.queue.appendleft((job, attempt + 1))
            return
        message = f"{job.image}: its Ray worker died {attempt + 1} times ({reason}); not retried"
        self.finish(job, Outcome(job.key, error=message))

    def finish(self, job: Job, outcome: Outcome) -> None:
        for text in outcome.notes:
            self.note(text)
        try:
            if outcome.record is not None:
                write_log(job.log_dir, outcome.record, self.run_log)
        except Exception as error:
            outcome = Outcome(job.key, error=f"{job.log_dir / self.run_log}: cannot write the run log ({error})")
        finally:
            self.release(job)
        if outcome.error is not None:
            self.report.tally.failed += 1
            self.report.failures.append(outcome.error)
            self.fail(outcome.error)
        elif outcome.kept:
            self.report.tally.skipped += 1
            self.note(f"{job.image}: kept {job.output}, finished by a worker that died before reporting it")
        else:
            self.report.tally.done += 1
            if outcome.record is not None:
                self.done(job, outcome.record)
        self.progress(1)

    def stop(self) -> None:
        """Kill the workers and wait for their ends; record the images they finished meanwhile, remove
        the temporary files of the others and release every claim. Ray may be going down itself
        (Ctrl-C reaches its processes too), so its errors do not stop the cleaning."""
        held = {ref: job for ref, (_, _, job, _) in self.waiting.items() if job is not None}
        finished: list[tuple[Job, Outcome]] = []
        try:
            for slot in self.slots:
                if slot.actor is not None:
                    self.ray.kill(slot.actor, no_restart=True)
            if held:
                ready, _ = self.ray.wait(list(held), num_returns=len(held), timeout=10)
                for ref in ready:
                    try:
                        finished.append((held[ref], self.ray.get(ref, timeout=1)))
                    except Exception:
                        continue
        except Exception:
            pass
        finally:
            _wait_for_exit([slot.pid for slot in self.slots if slot.pid is not None], timeout=10)
            for job, outcome in finished:
                if isinstance(outcome, Outcome) and outcome.record is not None:
                    self.finish(job, outcome)
            for job in held.values():
                _remove_temporaries(job)
            for key in list(self.claims):
                for path in self.claims.pop(key):
                    release(path)


def _remove_temporaries(job: Job) -> None:
    """Remove what a dead worker left while writing the job's outputs (``fsutil.temporaries_of``)."""
    for output in (*job.outputs, job.output.with_name(f"{job.output.stem}.attention.png")):
        for temporary in temporaries_of(output):
            temporary.unlink(missing_ok=True)


def _wait_for_exit(pids: list[int], timeout: float) -> None:
    """Wait until these processes of this machine are gone (or ``timeout`` seconds passed)."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                pass
            time.sleep(0.05)


def run_on_ray(
    jobs: Sequence[Job],
    spec: WorkerSpec,
    options: RayOptions = RayOptions(),
    *,
    run_log: str = RUN_LOG,
    overwrite: bool = False,
    fail: Callable[[str], None] = lambda _: None,
    note: Callable[[str], None] = lambda _: None,
    done: Callable[[Job, dict[str, Any]], None] = lambda job, record: None,
    progress: Callable[[int], None] = lambda _: None,
) -> RayReport:
    """Upscale planned jobs (``Batch.plan``'s: ``pending`` set) on Ray; see the module's docstring.

    ``fail`` gets each failure line, ``note`` each remark, ``done`` each record written, ``progress``
    the number of images finished. With nothing to do (a re-run of a finished job) Ray is not started."""
    options.check()
    started = time.perf_counter()
    report = RayReport()
    if not jobs:
        return report
    ray = import_ray(local=options.local)
    shutdown = connect(ray, options)
    try:
        run = _Run(
            ray, spec, options, report, run_log=run_log, overwrite=overwrite,
            fail=fail, note=note, done=done, progress=progress,
        )  # fmt: skip
        try:
            run.run(jobs, min(worker_count(ray, options), len(jobs)), started)
        except BaseException:
            run.stop()
            raise
        for slot in run.slots:
            if slot.actor is not None:
                ray.kill(slot.actor, no_restart=True)
    finally:
        if shutdown:
            ray.shutdown()
    report.seconds = time.perf_counter() - started
    return report
