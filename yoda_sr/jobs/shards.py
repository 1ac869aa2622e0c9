"""Splitting one job into N independent shards by path: ``--shard I/N``, or from a Slurm array or a
Kubernetes indexed Job.

An image's shard is a stable function of its path relative to the root it was found under (its key),
not of listing order: the sha256 of the key with its extension dropped, modulo N. Dropping the
extension keeps inputs that could name the same output (``a.bmp`` and ``a.gif`` both become
``a.png``) in one shard, where the batch sees the collision. Shards share nothing but the output
folder; each appends to its own run log, ``yoda-sr-upscale.I-of-N.jsonl`` (``runlogs.merge`` joins
them).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..errors import SettingError

RUN_LOG_STEM = "yoda-sr-upscale"
"""Run logs are ``yoda-sr-upscale.jsonl`` (one run) and ``yoda-sr-upscale.I-of-N.jsonl`` (shard I of N)."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    def owns(self, key: str) -> bool:
        """Whether the image with this key (its path relative to its root, POSIX style) is this shard's."""
        return shard_of(key, self.count) == self.index

    @property
    def run_log(self) -> str:
        """This shard's run log name."""
        return f"{RUN_LOG_STEM}.{self.index}-of-{self.count}.jsonl"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(key: str, count: int) -> int:
    """The shard (0..count-1) of an image key: sha256 of the key without its extension, modulo count."""
    path = PurePosixPath(key)
    stem = path.with_suffix("").as_posix() if path.suffix else path.as_posix()
    digest = hashlib.sha256(stem.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count


def _integer(text: str, what: str) -> int:
    text = text.strip()
    if not text.isdecimal():
        raise SettingError("shard", f"{what} must be a whole number, got {text!r}")
    return int(text)


def _checked(index: int, count: int, source: str) -> Shard:
    if count < 1:
        raise SettingError("shard", f"the shard count must be at least 1, got {count}{source}")
    if not 0 <= index < count:
        raise SettingError("shard", f"index {index} is not in 0..{count - 1}{source}")
    return Shard(index, count)


def parse_shard(text: str, environ: Mapping[str, str] | None = None) -> Shard:
    """A shard from ``I/N`` (0-based), ``auto`` (a Slurm array) or ``auto/N`` (a Slurm array of N
    tasks, or a Kubernetes indexed Job of N completions, whose index is JOB_COMPLETION_INDEX)."""
    environ = os.environ if environ is None else environ
    value = text.strip().lower()
    head, slash, tail = value.partition("/")
    count = _integer(tail, "N in auto/N") if slash and head == "auto" else None
    if head != "auto":
        if not slash:
            raise SettingError("shard", f"must be I/N (0 <= I < N), auto or auto/N, got {text!r}")
        return _checked(_integer(head, "I in I/N"), _integer(tail, "N in I/N"), "")
    if "SLURM_ARRAY_TASK_ID" in environ:
        return _slurm(environ, count)
    if "JOB_COMPLETION_INDEX" in environ:
        if count is None:
            raise SettingError(
                "shard", "auto: a Kubernetes indexed Job does not tell its completion count; give auto/N"
            )
        index = _integer(environ["JOB_COMPLETION_INDEX"], "JOB_COMPLETION_INDEX")
        return _checked(index, count, " (JOB_COMPLETION_INDEX)")
    raise SettingError(
        "shard",
        "auto: this is neither a Slurm array task (SLURM_ARRAY_TASK_ID) nor a Kubernetes indexed Job "
        "(JOB_COMPLETION_INDEX); give I/N",
    )


def _slurm(environ: Mapping[str, str], count: int | None) -> Shard:
    """Shard ID - MIN of a Slurm array's COUNT tasks; arrays with gaps or steps are refused."""
    task = _integer(environ["SLURM_ARRAY_TASK_ID"], "SLURM_ARRAY_TASK_ID")
    if "SLURM_ARRAY_TASK_COUNT" not in environ:
        raise SettingError("shard", "auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not; give I/N")
    tasks = _integer(environ["SLURM_ARRAY_TASK_COUNT"], "SLURM_ARRAY_TASK_COUNT")
    first = _integer(environ.get("SLURM_ARRAY_TASK_MIN", "0"), "SLURM_ARRAY_TASK_MIN")
    last = _integer(environ.get("SLURM_ARRAY_TASK_MAX", str(first + tasks - 1)), "SLURM_ARRAY_TASK_MAX")
    if last - first + 1 != tasks:
        raise SettingError(
            "shard",
            f"auto: the Slurm array {first}-{last} has {tasks} tasks, not one per index (gaps or a step); "
            "use --array=0-(N-1) or give I/N",
        )
    if count is not None and count != tasks:
        raise SettingError("shard", f"auto/{count}: the Slurm array has {tasks} tasks")
    return _checked(task - first, tasks, " (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN)")
