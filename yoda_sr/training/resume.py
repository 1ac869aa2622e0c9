"""Resuming a run: its recorded settings (``config.toml``) are the base, and what the command line
asks for is checked against them, so ``--resume`` continues the same training or says why not.

- Settings that decide the weights (data, model, crops, attention, optimiser, schedule, seed, ...)
  cannot change: a resumed run would no longer be the run its state was saved from.
- ``iterations`` may change (a run is extended or shortened; its samples do not depend on it),
  except under a cosine learning rate, whose every step depends on the run's length. The
  validation spacing stays as recorded: a run that validated every ``iterations // 10`` steps keeps
  that number of steps, and the rewritten ``config.toml`` records it.
- The rest (validation set and sampling, saving and logging cadence, device, workers) may change;
  one line says what changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..errors import SettingError, setting
from .config import TrainConfig, check_types, read_settings, validate

ADJUSTABLE = (
    "val",
    "val_every",
    "save_every",
    "log_every",
    "val_images",
    "val_steps",
    "device",
    "num_workers",
    "scale",
)
"""Settings a resumed run may change: none of them changes the weights it reaches."""
PATHS = ("data", "val", "init_from")
"""Settings compared as paths (``photos`` and ``./photos/`` are the same folder)."""


def _defaults() -> dict[str, Any]:
    return {item.name: item.default for item in fields(TrainConfig)}


def _same(key: str, a: Any, b: Any) -> bool:
    if a == b:
        return True
    if key in PATHS and a is not None and b is not None:
        return Path(str(a)).resolve() == Path(str(b)).resolve()
    return False


def resumed_settings(requested: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """The settings of resuming the run in ``requested["out"]``: its ``config.toml`` with the
    requested changes that keep it the same training (see the module docstring); SettingError
    naming the first setting that would not."""
    out = Path(str(requested.get("out", TrainConfig.out)))
    recorded_file = out / "config.toml"
    if not recorded_file.is_file():
        if not requested.get("data"):
            raise SettingError(
                "resume",
                f"{out} holds no run to resume (no config.toml); check {setting('out')}, or start a run with "
                f"{setting('data')}",
            )
        return requested
    recorded = {**_defaults(), **read_settings(recorded_file, "resume")}
    try:
        check_types(recorded)
    except SettingError as error:
        raise SettingError("resume", f"{recorded_file}: {error.setting} {error}") from None

    asked = {key: value for key, value in requested.items() if key not in ("out", "resume")}
    changed = [key for key, value in asked.items() if not _same(key, value, recorded[key])]
    notes: list[str] = []
    data_moved = "data" in changed and not Path(str(recorded["data"])).is_dir()
    if data_moved:
        changed.remove("data")
        notes.append(f"data {asked['data']} (the recorded {recorded['data']} is gone; it must hold the same images)")
    fixed = [key for key in changed if key not in ADJUSTABLE and key != "iterations"]
    if fixed:
        key = fixed[0]
        also = f" (also changed: {', '.join(fixed[1:])})" if fixed[1:] else ""
        raise SettingError(
            key,
            f"{asked[key]} differs from this run's {recorded[key]} ({recorded_file}){also}; a resumed run keeps "
            f"the settings it started with. Leave it out to continue the run, or start a new run in another "
            f"folder with {setting('init_from', out)}",
        )
    if "iterations" in changed and recorded["lr_schedule"] == "cosine":
        raise SettingError(
            "iterations",
            f"{asked['iterations']} differs from this run's {recorded['iterations']} ({recorded_file}), and its "
            f"cosine learning rate decays to 0 at step {recorded['iterations']}: another length would change the "
            f"rate of every step. Leave it out to continue the run, or start a new run in another folder with "
            f"{setting('init_from', out)}",
        )
    merged = {**recorded, **asked, "out": requested.get("out", recorded["out"]), "resume": True}
    notes.extend(f"{key} {asked[key]} (was {recorded[key]})" for key in changed)
    if "iterations" in changed and "val_every" not in changed:
        if recorded["val_every"] == 0:
            merged["val_every"] = max(1, recorded["iterations"] // 10)
        what = "validation and checkpoints stay" if merged["save_every"] == 0 else "validation stays"
        every = "every step" if merged["val_every"] == 1 else f"every {merged['val_every']} steps"
        notes.append(f"{what} {every}, as recorded (val_every changes that)")
    if notes:
        log(f"resuming {out} with {'; '.join(notes)}")
    return merged


def load_config(
    path: str | Path | None, overrides: dict[str, Any], log: Callable[[str], None] | None = None
) -> TrainConfig:
    """A TrainConfig from a TOML file (optional) with non-None ``overrides`` applied on top.

    With ``resume``, the run's recorded ``config.toml`` is the base and what the file and the
    overrides ask for is checked against it (``resumed_settings``); ``log`` gets the one
    line that says what a resume changes.
    """
    values: dict[str, Any] = read_settings(path) if path is not None else {}
    given = {key: value for key, value in overrides.items() if value is not None}
    from_file = set(values) - set(given)
    values.update(given)
    try:
        check_types(values)
        if values.get("resume"):
            values = resumed_settings(values, log or (lambda _: None))
        config = TrainConfig(**values)
        validate(config)
    except SettingError as error:
        if error.setting not in from_file:
            raise
        raise SettingError(error.setting, f"{error} ({error.setting} in {path})") from None
    return config
