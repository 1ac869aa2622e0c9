"""Joining run logs: the shards of a job (``--shard I/N``) each append to ``yoda-sr-upscale.I-of-N.jsonl``;
``merge`` folds them into the folder's ``yoda-sr-upscale.jsonl``.

The merged log holds every distinct record of the folder's log and its shard logs, ordered by time
and then output, written whole (``fsutil.atomic_write``). Identical lines are kept once, so merging
again (after more shards finished) is safe. The shard logs are left as they are.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import YodaError
from ..fsutil import atomic_write_bytes
from .shards import RUN_LOG_STEM
from .upscaling import RUN_LOG

_SHARD_LOG = re.compile(re.escape(RUN_LOG_STEM) + r"\.(\d+)-of-(\d+)\.jsonl$")


@dataclass
class Merged:
    """What ``merge`` wrote: the log, its records, the logs read, and lines it could not read."""

    path: Path
    records: int = 0
    outputs: int = 0
    sources: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """One line per unreadable line (``FILE:LINE: ...``); those lines are left out."""
    missing_shards: list[int] = field(default_factory=list)
    """Shard indices of 0..N-1 with no log (not run yet, or nothing to do)."""


def shard_logs(folder: Path) -> list[Path]:
    """The shard run logs in a folder, by shard count and index."""
    found = []
    for path in folder.iterdir():
        match = _SHARD_LOG.match(path.name)
        if match and path.is_file() and not path.is_symlink():
            found.append((int(match[2]), int(match[1]), path))
    return [path for _, _, path in sorted(found)]


def merge(folder: Path) -> Merged:
    """Fold a folder's shard logs into its ``yoda-sr-upscale.jsonl``; see the module's docstring."""
    if not folder.is_dir():
        raise YodaError(f"{folder}: not a folder")
    target = folder / RUN_LOG
    if target.is_symlink():
        raise YodaError(f"{target} is a symbolic link; remove it (the run log is never followed)")
    shards = shard_logs(folder)
    if not shards:
        raise YodaError(f"{folder}: no shard run logs ({RUN_LOG_STEM}.I-of-N.jsonl) to merge")
    merged = Merged(target, sources=([target] if target.exists() else []) + shards)
    seen: set[str] = set()
    records: list[dict[str, Any]] = []
    for source in merged.sources:
        for number, line in enumerate(source.read_text(errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                merged.problems.append(f"{source}:{number}: not a JSON line ({error.msg}); left out")
                continue
            if not isinstance(record, dict):
                merged.problems.append(f"{source}:{number}: not a JSON object; left out")
                continue
            canonical = json.dumps(record, sort_keys=True)
            if canonical not in seen:
                seen.add(canonical)
                records.append(record)
    records.sort(key=lambda record: (str(record.get("time", "")), str(record.get("output", ""))))
    text = "".join(json.dumps(record, sort_keys=True) + "\n" for record in records)
    atomic_write_bytes(target, text.encode())
    merged.records = len(records)
    merged.outputs = len({str(record.get("output")) for record in records})
    counts = {int(match[2]) for path in shards if (match := _SHARD_LOG.match(path.name))}
    present = {int(match[1]) for path in shards if (match := _SHARD_LOG.match(path.name))}
    if len(counts) == 1:
        merged.missing_shards = sorted(set(range(counts.pop())) - present)
    return merged
