"""Which diffusion process a model was trained for, read from its metadata (docs/method.md §8, §10).

``ddpm`` (the default, also for files that name none): gamma schedules (``schedules``) sampled by
ancestral DDPM or DDIM (``sampling``), the network predicting epsilon. ``resshift``: ResShift's eta
schedule and chain (``resshift``), the network predicting x0. ``sampling.sample`` runs either,
dispatching on the schedule it is given, so callers only build the right schedule.
"""

from __future__ import annotations

from typing import Any

from .resshift import SAMPLER as RESSHIFT_SAMPLER
from .resshift import ResShiftSchedule, ResShiftSpec
from .schedules import NoiseSchedule, ScheduleSpec

PROCESSES = ("ddpm", "resshift")
SAMPLERS: dict[str, tuple[str, ...]] = {"ddpm": ("ddpm", "ddim"), "resshift": (RESSHIFT_SAMPLER,)}
"""The samplers each process offers; the first is its default."""

AnySpec = ScheduleSpec | ResShiftSpec
AnySchedule = NoiseSchedule | ResShiftSchedule


def process_of(metadata: dict[str, Any]) -> str:
    """The metadata's ``process`` (``ddpm`` when absent); ValueError for an unknown one."""
    process = metadata.get("process", "ddpm")
    if process not in PROCESSES:
        raise ValueError(f"unknown diffusion process {process!r} (known: {', '.join(PROCESSES)})")
    return str(process)


def schedule_spec(metadata: dict[str, Any]) -> AnySpec:
    """The training schedule of a model's metadata, of its process; ValueError/TypeError if unusable."""
    schedule: Any = metadata.get("schedule")
    if process_of(metadata) == "resshift":
        return ResShiftSpec.from_dict(schedule)
    return ScheduleSpec.from_dict(schedule)
