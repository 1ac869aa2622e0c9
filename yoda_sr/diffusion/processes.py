"""The processes a model can be trained for, read from its metadata (docs/method.md §8, §10).

Each entry names a process (a checkpoint's metadata ``process``; ``ddpm`` for files that name
none), its schedule's description and the samplers that run it: ``ddpm`` is a gamma schedule
(``schedules``) sampled by ancestral DDPM or DDIM (``ddpm``), the network predicting epsilon;
``resshift`` is ResShift's eta schedule and chain (``resshift``), the network predicting x0.
``make_process`` turns a built schedule and a sampler into what ``loop.reverse`` runs; a new
process is a module with a ``process.Process`` and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .ddpm import DDIM, DDPM
from .process import Process
from .resshift import ResShift, ResShiftSchedule, ResShiftSpec
from .schedules import NoiseSchedule, ScheduleSpec

AnySpec = ScheduleSpec | ResShiftSpec
AnySchedule = NoiseSchedule | ResShiftSchedule


@dataclass(frozen=True)
class ProcessEntry:
    """One process: how its schedule is described and built, and its samplers (the first is the default)."""

    spec: Callable[[dict[str, Any]], AnySpec]
    """The schedule description from metadata (ValueError/TypeError if unusable)."""
    schedule: type
    """The built schedule's type (what ``make_process`` dispatches on)."""
    samplers: dict[str, Callable[[Any, float], Process[Any]]]
    """sampler name -> (schedule, eta) -> the process ``loop.reverse`` runs."""
    eta: bool = False
    """Whether a sampler takes DDIM's eta (others refuse eta != 0)."""


PROCESSES: dict[str, ProcessEntry] = {
    "ddpm": ProcessEntry(
        spec=ScheduleSpec.from_dict,
        schedule=NoiseSchedule,
        samplers={"ddpm": lambda schedule, eta: DDPM(schedule), "ddim": DDIM},
        eta=True,
    ),
    "resshift": ProcessEntry(
        spec=ResShiftSpec.from_dict,
        schedule=ResShiftSchedule,
        samplers={ResShift.name: lambda schedule, eta: ResShift(schedule)},
    ),
}
SAMPLERS: dict[str, tuple[str, ...]] = {name: tuple(entry.samplers) for name, entry in PROCESSES.items()}
"""The samplers each process offers; the first is its default."""


def process_of(metadata: dict[str, Any]) -> str:
    """The metadata's ``process`` (``ddpm`` when absent); ValueError for an unknown one."""
    process = metadata.get("process", "ddpm")
    if process not in PROCESSES:
        raise ValueError(f"unknown diffusion process {process!r} (known: {', '.join(PROCESSES)})")
    return str(process)


def schedule_spec(metadata: dict[str, Any]) -> AnySpec:
    """The training schedule of a model's metadata, of its process; ValueError/TypeError if unusable."""
    return PROCESSES[process_of(metadata)].spec(metadata.get("schedule"))  # type: ignore[arg-type]


def make_process(schedule: AnySchedule, sampler: str | None = None, eta: float = 0.0) -> Process[Any]:
    """The process that samples ``schedule`` with ``sampler`` (default: the process's first).

    ValueError for a sampler the schedule's process does not offer, or an eta it does not take.
    """
    found = [(name, entry) for name, entry in PROCESSES.items() if isinstance(schedule, entry.schedule)]
    if not found:
        raise TypeError(f"no process samples a {type(schedule).__name__}")
    name, entry = found[0]
    chosen = sampler or next(iter(entry.samplers))
    if chosen not in entry.samplers:
        raise ValueError(f"unknown sampler {chosen!r} for the {name} process: use {' or '.join(entry.samplers)}")
    if not entry.eta and eta != 0:
        raise ValueError(f"the {name} process takes no eta, got {eta}")
    return entry.samplers[chosen](schedule, eta)
