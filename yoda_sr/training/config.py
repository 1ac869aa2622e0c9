"""The settings of a training run: a TOML file (``--config``) with command-line flags on top."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found]


@dataclass
class TrainConfig:
    """Every setting of a run; a TOML file holds the same keys, command-line flags override it."""

    data: str = ""
    val: str | None = None
    model: str = "srdiff-tiny"
    init_from: str | None = None
    scale: int | None = None
    hr_size: int = 64
    mode: str = "patches"
    attention: str = "edge"
    lower_bound: float = 0.2
    iterations: int = 1000
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 5e-5
    weight_decay: float = 1e-4
    warmup: int = 100
    lr_schedule: str = "constant"
    """After the warm-up: constant, or cosine (decaying to 0 at the last iteration)."""
    ema: float = 0.9999
    amp: str = "no"
    num_workers: int = 0
    seed: int = 0
    out: str = "runs/yoda-sr"
    resume: bool = False
    clip_grad: float = 1.0
    val_every: int = 0
    """0: ten validations per run."""
    save_every: int = 0
    """0: at every validation."""
    val_images: int = 4
    val_steps: int = 20
    device: str = "auto"
    plain_fraction: float = 0.0
    """Share of each batch trained with A = 1, so the model also serves plain sampling."""
    aux_l1: float = 0.0
    """Weight of an L1 loss on the LR encoder's own SR output (SRDiff with residual_base = rrdb),
    which trains the base the diffusion's residual is measured from (SRDiff's aux_l1_loss)."""

    @classmethod
    def keys(cls) -> set[str]:
        return {f.name for f in fields(cls)}


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from a TOML file (optional) with non-None ``overrides`` applied on top."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as handle:
                values = tomllib.load(handle)
        except FileNotFoundError:
            raise UsageError(f"--config {path}: no such file") from None
        except tomllib.TOMLDecodeError as error:
            raise UsageError(f"--config {path}: {error}") from None
        values = {key.replace("-", "_"): value for key, value in values.items()}
        unknown = sorted(set(values) - TrainConfig.keys())
        if unknown:
            raise UsageError(f"--config {path}: unknown keys {', '.join(unknown)}")
    values.update({key: value for key, value in overrides.items() if value is not None})
    config = TrainConfig(**values)
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    """Raise UsageError for the first setting out of range (the model-dependent ones are checked
    when the model is built)."""
    from ..attention import METHODS

    if not config.data:
        raise UsageError("--data is required (a folder of training images)")
    checks = [
        (config.mode in ("patches", "faces"), f"--mode must be patches or faces, got {config.mode!r}"),
        (config.attention in METHODS, f"--attention must be one of {', '.join(METHODS)}"),
        (0 <= config.lower_bound <= 1, "--lower-bound must lie in [0, 1]"),
        (config.iterations >= 1, "--iterations must be at least 1"),
        (config.batch_size >= 1 and config.grad_accum >= 1, "--batch-size and --grad-accum must be >= 1"),
        (config.lr > 0 and config.weight_decay >= 0, "--lr must be > 0 and --weight-decay >= 0"),
        (0 <= config.ema < 1, "--ema must lie in [0, 1)"),
        (config.amp in ("no", "bf16", "fp16"), "--amp must be bf16, fp16 or no"),
        (config.num_workers >= 0 and config.warmup >= 0, "--num-workers and --warmup must be >= 0"),
        (0 <= config.plain_fraction <= 1, "plain_fraction must lie in [0, 1]"),
        (config.aux_l1 >= 0, "aux_l1 must be >= 0"),
        (config.lr_schedule in ("constant", "cosine"), "lr_schedule must be constant or cosine"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)


def to_toml(config: TrainConfig) -> str:
    """The resolved settings as a TOML file that ``--config`` reads back (None values left out)."""
    lines = ["# yoda-sr train: the resolved settings of this run (usable as --config)"]
    for key, value in asdict(config).items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        else:
            text = json.dumps(str(value))
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"
