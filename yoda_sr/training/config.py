"""The settings of a training run: a TOML file (``--config``) with command-line flags on top."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import SettingError, setting

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found]


MAX_STEP_PIXELS = 2**28
"""The most HR pixels one micro-batch may hold (``batch_size`` x ``hr_size``²): 3 GB per float32 RGB
copy of the batch, far beyond what the activations of any device allow; refused before any work."""

LR_DEGRADATIONS = ("bicubic", "realistic")
"""``lr_degradation``: how training LR crops are made."""


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
    log_every: int = 0
    """Progress line every N steps when stderr is not a terminal; 0: every 100 steps (5% of shorter runs)."""
    val_images: int = 4
    val_steps: int = 20
    device: str = "auto"
    plain_fraction: float = 0.0
    """Share of each batch trained with A = 1, so the model also serves plain sampling."""
    aux_l1: float = 0.0
    """Weight of an L1 loss on the LR encoder's own SR output (SRDiff with residual_base = rrdb),
    which trains the base the diffusion's residual is measured from (SRDiff's aux_l1_loss)."""
    process: str = "ddpm"
    """ddpm (the network predicts epsilon; DDPM/DDIM sampling on the model config's schedule) or
    resshift (ResShift's chain below, the network predicting x0; docs/method.md §10)."""
    shift_steps: int = 15
    """ResShift: T, the number of steps of its chain."""
    kappa: float = 2.0
    """ResShift: the noise scale kappa."""
    eta_first: float = 4e-4
    """ResShift: eta_1, the shift at the first step."""
    eta_last: float = 0.9801
    """ResShift: eta_T, the shift at the last step."""
    eta_power: float = 0.3
    """ResShift: the power p of the exponential eta schedule."""
    perceptual: float = 0.0
    """Weight of LPIPS-VGG between the HR crop and the image of the denoiser's one-step estimate of
    z_0 (the known region outside M(t)), beside the L1 on its output; needs the lpips-vgg weights."""
    unroll_steps: int = 0
    """0: ``perceptual`` compares the one-step z_0 estimate. N >= 1: each step also runs the model's
    N-step DDPM sampler on the batch (YODA-masked with its maps at ``lower_bound``, over the sampler's
    blocks, as ``upscale`` samples), and ``perceptual`` and ``sample_l1`` compare that image, with
    gradients through every step (docs/method.md §6)."""
    sample_l1: float = 0.0
    """Weight of the L1 between the HR crop and the unrolled sample (needs ``unroll_steps``)."""
    freeze_base: bool = False
    """The LR encoder, and so the regression base, gets no gradient: only the denoiser trains."""
    lr_noise: float = 0.0
    """Half of the training LR crops get Gaussian noise of a sigma uniform in [0, lr_noise] (8-bit levels)."""
    lr_jpeg: int = 0
    """Half of the training LR crops (independently) go through JPEG of a quality uniform in [lr_jpeg, 95];
    0: none. With either degradation on, every LR crop is rounded to 8 bits, as a user's file is."""
    lr_degradation: str = "bicubic"
    """How a training LR crop is made from its HR crop: bicubic (the project's downscale, then
    ``lr_noise`` / ``lr_jpeg``) or realistic (random blur, resize, noise and JPEG in one or two
    rounds, ``yoda_sr.image.realistic``; docs/method.md §6)."""
    lr_clean: str = "off"
    """auto: each 8-bit training LR crop goes through ``upscale``'s ``--clean auto`` (JPEG deblocking or
    denoising where found, ``yoda_sr.image.restoration``), so the model learns from the LR it will be
    given; off: the degraded LR as drawn. Needs 8-bit LR crops (``lr_degradation``, ``lr_noise`` or
    ``lr_jpeg``)."""
    compile: bool = False
    """Train the denoiser through torch.compile (``compiled``): minutes to compile, faster steps."""

    @classmethod
    def keys(cls) -> set[str]:
        return {f.name for f in fields(cls)}


def read_settings(path: str | Path, setting: str = "config") -> dict[str, Any]:
    """The settings of a TOML file (keys with ``-`` or ``_``); SettingError under ``setting`` for a
    missing or unreadable file or an unknown key."""
    try:
        with open(path, "rb") as handle:
            values = tomllib.load(handle)
    except FileNotFoundError:
        raise SettingError(setting, f"{path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as error:
        raise SettingError(setting, f"{path}: {error}") from None
    values = {key.replace("-", "_"): value for key, value in values.items()}
    unknown = sorted(set(values) - TrainConfig.keys())
    if unknown:
        raise SettingError(setting, f"{path}: unknown keys {', '.join(unknown)}")
    return values


_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def check_types(values: dict[str, Any]) -> None:
    """SettingError for a value of the wrong type (a string batch size, a boolean seed) or a
    non-finite number; checked before anything else so later checks compare numbers."""
    for item in fields(TrainConfig):
        if item.name not in values or values[item.name] is None:
            continue
        value = values[item.name]
        annotation = str(item.type).replace(" | None", "")
        wanted = _TYPES.get(annotation, (object,))
        if (isinstance(value, bool) and bool not in wanted) or not isinstance(value, wanted):
            raise SettingError(item.name, f"must be {annotation}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise SettingError(item.name, f"must be a finite number, got {value!r}")


def validate(config: TrainConfig) -> None:
    """SettingError for the first setting out of range (the model-dependent ones, such as the size
    multiple of ``hr_size``, are checked when the model is built)."""
    from ..attention import METHODS

    if not config.data:
        raise SettingError("data", "is required (a folder of training images)")
    checks = [
        ("mode", config.mode in ("patches", "faces"), f"must be patches or faces, got {config.mode!r}"),
        ("attention", config.attention in METHODS, f"must be one of {', '.join(METHODS)}"),
        ("lower_bound", 0 <= config.lower_bound <= 1, "must lie in [0, 1]"),
        ("iterations", config.iterations >= 1, "must be at least 1"),
        ("batch_size", config.batch_size >= 1, "must be at least 1"),
        ("grad_accum", config.grad_accum >= 1, "must be at least 1"),
        ("hr_size", 8 <= config.hr_size <= 4096, f"must be 8..4096 pixels, got {config.hr_size}"),
        (
            "batch_size",
            config.batch_size * config.hr_size**2 <= MAX_STEP_PIXELS,
            f"{config.batch_size} crops of {config.hr_size}x{config.hr_size} pixels are "
            f"{config.batch_size * config.hr_size**2} pixels per micro-batch, more than {MAX_STEP_PIXELS} "
            f"(no device holds their activations); lower it and raise {setting('grad_accum')} instead",
        ),
        ("lr", 0 < config.lr <= 1, f"must be > 0 and at most 1, got {config.lr}"),
        ("weight_decay", config.weight_decay >= 0, "must be >= 0"),
        ("warmup", config.warmup >= 0, "must be >= 0"),
        ("ema", 0 <= config.ema < 1, "must lie in [0, 1)"),
        ("amp", config.amp in ("no", "bf16", "fp16"), "must be bf16, fp16 or no"),
        ("num_workers", config.num_workers >= 0, "must be >= 0"),
        ("seed", 0 <= config.seed < 2**63, f"must be 0..{2**63 - 1}, got {config.seed}"),
        ("clip_grad", config.clip_grad >= 0, "must be >= 0 (0: no clipping)"),
        ("val_every", config.val_every >= 0, "must be >= 0 (0: ten validations per run)"),
        ("save_every", config.save_every >= 0, "must be >= 0 (0: at every validation)"),
        ("log_every", config.log_every >= 0, "must be >= 0 (0: every 100 steps, or 5% of shorter runs)"),
        ("val_images", config.val_images >= 1, "must be at least 1"),
        ("val_steps", config.val_steps >= 1, "must be at least 1"),
        ("plain_fraction", 0 <= config.plain_fraction <= 1, "must lie in [0, 1]"),
        ("aux_l1", config.aux_l1 >= 0, "must be >= 0"),
        ("perceptual", config.perceptual >= 0, "must be >= 0"),
        ("unroll_steps", 0 <= config.unroll_steps <= 100, f"must be 0 (off) or 1..100, got {config.unroll_steps}"),
        ("unroll_steps", config.unroll_steps == 0 or config.process == "ddpm", f"needs {setting('process', 'ddpm')}"),
        ("sample_l1", config.sample_l1 >= 0, "must be >= 0"),
        (
            "sample_l1",
            config.sample_l1 == 0 or config.unroll_steps > 0,
            f"needs {setting('unroll_steps')} (the sample)",
        ),
        (
            "freeze_base",
            not (config.freeze_base and config.aux_l1 > 0),
            f"cannot train the base with {setting('aux_l1')} while freezing it; set it to 0",
        ),
        ("lr_noise", 0 <= config.lr_noise <= 50, f"must lie in [0, 50] (8-bit levels), got {config.lr_noise}"),
        ("lr_jpeg", 0 <= config.lr_jpeg <= 95, f"must be 0 (none) or a JPEG quality 1..95, got {config.lr_jpeg}"),
        (
            "lr_degradation",
            config.lr_degradation in LR_DEGRADATIONS,
            f"must be {' or '.join(LR_DEGRADATIONS)}, got {config.lr_degradation!r}",
        ),
        (
            "lr_degradation",
            config.lr_degradation == "bicubic" or (config.lr_noise == 0 and config.lr_jpeg == 0),
            f"realistic draws its own noise and JPEG; set {setting('lr_noise', 0)} and {setting('lr_jpeg', 0)}",
        ),
        ("lr_clean", config.lr_clean in ("off", "auto"), f"must be off or auto, got {config.lr_clean!r}"),
        (
            "lr_clean",
            config.lr_clean == "off" or config.lr_degradation != "bicubic" or config.lr_noise > 0 or config.lr_jpeg > 0,
            f"cleans degraded 8-bit LR only; set {setting('lr_degradation', 'realistic')}, "
            f"{setting('lr_noise')} or {setting('lr_jpeg')}",
        ),
        ("lr_schedule", config.lr_schedule in ("constant", "cosine"), "must be constant or cosine"),
        ("process", config.process in ("ddpm", "resshift"), f"must be ddpm or resshift, got {config.process!r}"),
        ("shift_steps", 2 <= config.shift_steps <= 1000, f"must be 2..1000, got {config.shift_steps}"),
        ("kappa", 0 < config.kappa <= 100, f"must be > 0 and at most 100, got {config.kappa}"),
        ("eta_first", 0 < config.eta_first < config.eta_last, "must be > 0 and below eta_last"),
        ("eta_last", config.eta_last < 1, f"must be below 1, got {config.eta_last}"),
        ("eta_power", 0 < config.eta_power <= 100, f"must be > 0 and at most 100, got {config.eta_power}"),
    ]
    for name, ok, message in checks:
        if not ok:
            raise SettingError(name, message)


def to_toml(config: TrainConfig) -> str:
    """The resolved settings as a TOML file that ``--config`` reads back (None values and ``resume``,
    a request rather than a setting, left out)."""
    lines = ["# yoda-sr train: the resolved settings of this run (a config file to read back; resuming continues it)"]
    for key, value in asdict(config).items():
        if value is None or key == "resume":
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        else:
            text = json.dumps(str(value))
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"
