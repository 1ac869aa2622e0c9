"""`yoda-sr train`: YODA masked training (METHOD.md §6) that resumes exactly and scales out.

Determinism is by construction: every training sample is a pure function of (seed, global sample
index) — which image, where to crop, how to flip, which t and which noise — so a resumed run sees
exactly the samples an uninterrupted one would, and under ``torchrun`` rank r of W takes samples
r*B .. r*B+B-1 of each step's global batch of W*B, the same samples a single process with batch W*B
takes. The loss of a step is the masked L1 over the whole global batch (each rank divides by the
global count of active elements), so its gradient does not depend on how the batch is split.

A run folder holds ``config.toml`` (resolved settings), ``weights/{ema,model}.safetensors`` (full
metadata; ``--model RUN_DIR`` loads the EMA weights), ``state/last.pt`` (optimizer, EMA and step, for
``--resume``; read back with ``torch.load(weights_only=True)``), ``metrics.csv``, ``loss.png``,
``psnr.png`` and ``samples/step_NNNNNN.png`` grids (LR | bicubic | SR | HR | attention).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from . import checkpoints
from ._version import __version__
from .errors import UsageError, YodaError
from .fsutil import atomic_save, atomic_write
from .seeds import derive_seed

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib


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
    _validate(config)
    return config


def _validate(config: TrainConfig) -> None:
    from .attention import METHODS

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


# --- data -----------------------------------------------------------------------------------------


@dataclass
class Source:
    """One training image, kept in memory with its attention map at the same (HR) size."""

    path: Path
    hr: Tensor  # 3 x H x W uint8
    attention: Tensor | None  # 1 x H x W float16


def _attention_cache_dir() -> Path:
    return checkpoints.home() / "cache" / "attention"


def _source_attention(hr: Tensor, digest: str, method: str, scale: int) -> Tensor:
    """A of an HR image computed on its LR version (METHOD.md §4), cached on disk by content."""
    from .attention import compute_attention
    from .imaging import bicubic_degrade

    height, width = hr.shape[-2:]
    cache = _attention_cache_dir() / f"{digest[:32]}-{method}-x{scale}-{height}x{width}.npy"
    if cache.is_file():
        try:
            return torch.from_numpy(np.load(cache, allow_pickle=False)).unsqueeze(0)
        except (OSError, ValueError):
            cache.unlink(missing_ok=True)
    image = hr.float().unsqueeze(0) / 127.5 - 1
    hr_cropped, lr = bicubic_degrade(image, scale)
    maps = compute_attention(lr, method, hr_size=tuple(hr_cropped.shape[-2:]))[0, 0]
    full = torch.zeros(height, width)
    full[: maps.shape[0], : maps.shape[1]] = maps
    array = full.to(torch.float16).numpy()
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(cache, lambda handle: np.save(handle, array, allow_pickle=False))
    return torch.from_numpy(array).unsqueeze(0)


def load_sources(folder: str | Path, config: TrainConfig, scale: int, log) -> list[Source]:
    """Every readable image of ``folder`` (recursively) as a Source; bad ones are skipped with a warning."""
    from .files import find_images
    from .imageio import read_picture
    from .imaging import resize_bicubic, to_tensor

    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder of images")
    found = find_images([folder], recursive=True)
    sources = []
    for path, _ in found.images:
        try:
            picture = read_picture(path)
        except YodaError as error:
            log(f"warning: skipped {error}")
            continue
        rgb = picture.rgb if picture.bits == 8 else (picture.rgb // 257).astype(np.uint8)
        hr = torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1).contiguous()
        if config.mode == "faces":
            side = min(hr.shape[-2:])
            top, left = (hr.shape[-2] - side) // 2, (hr.shape[-1] - side) // 2
            square = to_tensor(rgb[top : top + side, left : left + side])
            resized = resize_bicubic(square, size=(config.hr_size, config.hr_size))
            hr = ((resized[0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        elif min(hr.shape[-2:]) < config.hr_size:
            log(f"warning: skipped {path}: smaller than --hr-size {config.hr_size}")
            continue
        attention = None
        if config.attention != "none":
            digest = hashlib.sha256(hr.numpy().tobytes()).hexdigest()
            attention = _source_attention(hr, digest, config.attention, scale)
        sources.append(Source(path, hr, attention))
    if not sources:
        raise YodaError(f"no usable training images in {folder}")
    return sources


class Samples(torch.utils.data.Dataset):
    """Sample ``index`` of the run: a random crop (or whole face), flipped, with its LR and A."""

    def __init__(self, sources: list[Source], config: TrainConfig, scale: int) -> None:
        self.sources = sources
        self.config = config
        self.scale = scale

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        from .imaging import resize_bicubic

        generator = torch.Generator().manual_seed(derive_seed(self.config.seed, index, "data"))
        source = self.sources[int(torch.randint(len(self.sources), (1,), generator=generator))]
        size = self.config.hr_size
        height, width = source.hr.shape[-2:]
        top = int(torch.randint(height - size + 1, (1,), generator=generator))
        left = int(torch.randint(width - size + 1, (1,), generator=generator))
        hr = source.hr[:, top : top + size, left : left + size].float() / 127.5 - 1
        attention = (
            torch.ones(1, size, size)
            if source.attention is None
            else source.attention[:, top : top + size, left : left + size].float()
        )
        flips = torch.rand(2, generator=generator)
        if flips[0] < 0.5:
            hr, attention = hr.flip(-1), attention.flip(-1)
        if flips[1] < 0.5 and self.config.mode == "patches":
            hr, attention = hr.flip(-2), attention.flip(-2)
        plain = float(torch.rand(1, generator=generator)) < self.config.plain_fraction
        lr = resize_bicubic(hr.unsqueeze(0), size=(size // self.scale, size // self.scale))[0]
        return {"hr": hr, "lr": lr, "attention": attention, "plain": torch.tensor(plain), "index": torch.tensor(index)}


class _Indices(torch.utils.data.Sampler):
    """The global sample indices this rank takes, step after step, from ``first_step`` on."""

    def __init__(self, first_step: int, per_step: int, grad_accum: int, rank: int, world: int) -> None:
        self.first_step, self.per_step, self.grad_accum = first_step, per_step, grad_accum
        self.rank, self.world = rank, world

    def __iter__(self):
        step = self.first_step
        global_batch = self.per_step * self.world
        while True:
            for micro in range(self.grad_accum):
                base = (step * self.grad_accum + micro) * global_batch + self.rank * self.per_step
                yield from range(base, base + self.per_step)
            step += 1

    def __len__(self) -> int:
        return 2**62


# --- model, state ---------------------------------------------------------------------------------


def build_model(config: TrainConfig) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model to train and the base of its metadata (architecture, schedule, sampling)."""
    from .models import create_model, get_config, list_configs

    names = {c.name for c in list_configs()}
    if config.model in names:
        spec = get_config(config.model)
        model = create_model(config.model)
        metadata = {
            "arch": spec.arch,
            "hparams": model.config,
            "schedule": spec.schedule.to_dict(),
            "sampling": {"steps": spec.sampling_steps, "sampler": "ddpm"},
            "base_config": spec.name,
        }
    else:
        loaded = checkpoints.load_denoiser(config.model)
        model = loaded.model.float().train().requires_grad_(True)
        metadata = {key: loaded.metadata[key] for key in ("arch", "hparams", "schedule") if key in loaded.metadata}
        metadata["sampling"] = loaded.metadata.get("sampling", {"steps": 100, "sampler": "ddpm"})
        metadata["fine_tuned_from"] = {"model": loaded.name, "sha256": loaded.sha256}
    if config.init_from:
        source = checkpoints.load_denoiser(config.init_from)
        try:
            model.load_state_dict(source.model.state_dict(), strict=True)
        except RuntimeError as error:
            raise YodaError(f"--init-from {config.init_from}: {str(error).splitlines()[0]}") from None
        metadata["initialised_from"] = {"model": source.name, "sha256": source.sha256}
    return model, metadata


def _lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up over ``warmup`` steps, then constant or a cosine decay to 0."""
    if step < config.warmup:
        return (step + 1) / config.warmup
    if config.lr_schedule == "constant":
        return 1.0
    progress = (step - config.warmup) / max(1, config.iterations - config.warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _ema_decay(step: int, ema: float) -> float:
    """The EMA decay at a step: ``ema``, ramped up early so the average is not stuck at the init."""
    return min(ema, (1 + step) / (10 + step))


# --- the run --------------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_name: str) -> tuple[_Dist, torch.device]:
    from .devices import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return _Dist(), resolve_device(device_name)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return _Dist(rank, world, local_rank), device


@dataclass
class RunState:
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


class Trainer:
    """One training run (see the module docstring); ``run()`` trains to ``config.iterations``."""

    def __init__(self, config: TrainConfig, log=None) -> None:
        self.config = config
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self.dist, self.device = _init_distributed(config.device)
        self.out = Path(config.out)
        torch.manual_seed(config.seed)  # the initial weights
        self.model, self.metadata = build_model(config)
        self.model.to(self.device).train()
        info = self.model.info
        self.scale = info.scale
        if config.scale is not None and config.scale != self.scale:
            raise UsageError(f"--scale {config.scale}: {config.model} is a {self.scale}x model")
        multiple = math.lcm(info.size_multiple, self.scale)
        if config.hr_size % multiple:
            raise UsageError(f"--hr-size must be a multiple of {multiple} for this model, got {config.hr_size}")
        from .schedules import ScheduleSpec

        self.schedule = ScheduleSpec.from_dict(self.metadata["schedule"]).build()
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.state = RunState()
        self.sources = load_sources(config.data, config, self.scale, self._main_log)
        self.val_sources = load_sources(config.val, config, self.scale, self._main_log) if config.val else None
        if self.dist.world > 1:  # every rank starts from rank 0's weights
            for tensor in list(self.model.parameters()) + list(self.model.buffers()):
                dist.broadcast(tensor.data, src=0)
        self.val_every = config.val_every or max(1, config.iterations // 10)
        self.save_every = config.save_every or self.val_every
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
        if config.amp == "fp16" and self.device.type != "cuda":
            raise UsageError("--amp fp16 needs a CUDA device; use --amp bf16 or no on the CPU")
        self.scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None

    def _main_log(self, message: str) -> None:
        if self.dist.main:
            self.log(message)

    # -- state --

    def _state_path(self) -> Path:
        return self.out / "state" / "last.pt"

    def _save_state(self) -> None:
        state = {
            "step": self.state.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": json.dumps(self.state.history),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
        }
        path = self._state_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(path, lambda temporary: torch.save(state, temporary))
        self._write_weights()

    def _resume(self) -> None:
        path = self._state_path()
        if not path.is_file():
            raise UsageError(f"--resume: {path} does not exist (no checkpoint in {self.out})")
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.state = RunState(step=int(state["step"]), history=json.loads(state["history"]))
        self._main_log(f"resumed {self.out} at step {self.state.step}")

    def _metadata(self) -> dict[str, Any]:
        config = self.config
        yoda = None
        if config.attention != "none":
            yoda = {"attention": config.attention, "lower_bound": config.lower_bound, "mask_input": True}
        return {
            "kind": "denoiser",
            **self.metadata,
            "scale": self.scale,
            "yoda": yoda,
            "training": {
                "iterations": self.state.step,
                "batch_size": config.batch_size * self.dist.world * config.grad_accum,
                "hr_size": config.hr_size,
                "mode": config.mode,
                "lr": config.lr,
                "ema": config.ema,
                "seed": config.seed,
                "data": str(config.data),
                "world_size": self.dist.world,
                "device": str(self.device),
            },
            "source": {"trained_by": f"yoda-sr {__version__}", "run": self.out.name},
        }

    def _write_weights(self) -> None:
        metadata = self._metadata()
        checkpoints.save(
            self.out / "weights" / "ema.safetensors", self.ema.state_dict(), {**metadata, "weights": "ema"}
        )
        checkpoints.save(
            self.out / "weights" / "model.safetensors", self.model.state_dict(), {**metadata, "weights": "raw"}
        )

    # -- steps --

    def _batches(self):
        sampler = _Indices(
            self.state.step, self.config.batch_size, self.config.grad_accum, self.dist.rank, self.dist.world
        )
        loader = torch.utils.data.DataLoader(
            Samples(self.sources, self.config, self.scale),
            batch_size=self.config.batch_size,
            sampler=sampler,
            num_workers=self.config.num_workers,
            persistent_workers=self.config.num_workers > 0,
        )
        return iter(loader)

    def _loss_terms(self, model: torch.nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """(sum of masked |eps - f|, count of active elements, sum of |base - HR|) for one micro-batch.

        The last term is zero unless ``aux_l1`` is set and the model has a trainable residual base.
        """
        from .training import masked_l1_terms, noise_batch

        hr, lr = batch["hr"].to(self.device), batch["lr"].to(self.device)
        attention = batch["attention"].to(self.device)
        attention = torch.where(batch["plain"].to(self.device).view(-1, 1, 1, 1), torch.ones_like(attention), attention)
        module = model
        from .imaging import resize_bicubic

        x_up = resize_bicubic(lr, size=hr.shape[-2:])
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            cond = module.prepare(lr, x_up)
            z0 = module.to_diffusion_space(hr, cond).detach().float()
            draws = [
                noise_batch(
                    z0[i : i + 1],
                    self.schedule,
                    continuous=module.conditioning == "noise_level",
                    attention=None if self.config.attention == "none" else attention[i : i + 1],
                    lower_bound=self.config.lower_bound,
                    generator=torch.Generator().manual_seed(derive_seed(self.config.seed, int(index), "noise")),
                )
                for i, index in enumerate(batch["index"])
            ]
            z = torch.cat([d.z for d in draws])
            eps = torch.cat([d.eps for d in draws])
            mask = None if draws[0].mask is None else torch.cat([d.mask for d in draws])
            z_in = z * mask if mask is not None else z
            prediction = model(z_in, cond, torch.cat([d.t for d in draws]), torch.cat([d.noise_level for d in draws]))
        total, count = masked_l1_terms(eps, prediction.float(), mask)
        aux = torch.zeros((), device=self.device)
        if self.config.aux_l1 > 0 and cond.base is not None and cond.base is not cond.x_up:
            aux = (cond.base.float() - hr).abs().sum()
        return total, count, aux

    def _step(self, batches) -> float:
        config = self.config
        model = self.model
        micro = [next(batches) for _ in range(config.grad_accum)]
        counts = torch.stack([self._count(b) for b in micro]).to(self.device)
        if self.dist.world > 1:
            dist.all_reduce(counts)
        total_count = counts.sum().clamp(min=1)
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr * _lr_factor(self.state.step, config)
        self.optimizer.zero_grad(set_to_none=True)
        loss_value = 0.0
        elements = float(micro[0]["hr"].numel() * len(micro) * self.dist.world)
        for batch in micro:
            total, _, aux = self._loss_terms(model, batch)
            # Divided by global counts, so that the ranks' gradients add up to the global batch's.
            loss = total / total_count + config.aux_l1 * aux / elements
            loss_value += float(total.detach()) / float(total_count)
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        if self.dist.world > 1:
            self._reduce_gradients()
            value = torch.tensor([loss_value], device=self.device)
            dist.all_reduce(value)
            loss_value = float(value)
        if not math.isfinite(loss_value):
            raise YodaError(
                f"the loss became {loss_value} at step {self.state.step + 1}; stopped. The last good checkpoint "
                f"is kept in {self.out} (try a lower --lr, or --amp no)"
            )
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        self._dump_gradients()
        if config.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.clip_grad)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        decay = _ema_decay(self.state.step, config.ema)
        with torch.no_grad():
            for ema_param, param in zip(self.ema.parameters(), self.model.parameters(), strict=True):
                ema_param.lerp_(param, 1 - decay)
            for ema_buffer, buffer in zip(self.ema.buffers(), self.model.buffers(), strict=True):
                ema_buffer.copy_(buffer)
        self.state.step += 1
        return loss_value

    def _reduce_gradients(self) -> None:
        """Sum the ranks' gradients (one flat all-reduce). Each rank's loss is already divided by the
        global element count, so the sum is the gradient of the global batch's loss."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()

    def _count(self, batch: dict[str, Tensor]) -> Tensor:
        """Active elements of a micro-batch (what its masked L1 divides by), without a forward pass.

        The masks come from ``noise_batch`` with the same per-sample generators ``_loss_terms`` uses,
        so they are exactly the masks of the loss (the state itself does not matter here).
        """
        from .training import noise_batch

        if self.config.attention == "none":
            return torch.tensor(float(batch["hr"].numel()))
        attention = torch.where(
            batch["plain"].view(-1, 1, 1, 1), torch.ones_like(batch["attention"]), batch["attention"]
        )
        total = 0.0
        for i, index in enumerate(batch["index"]):
            draw = noise_batch(
                torch.zeros_like(batch["hr"][i : i + 1]),
                self.schedule,
                continuous=self.model.conditioning == "noise_level",
                attention=attention[i : i + 1],
                lower_bound=self.config.lower_bound,
                generator=torch.Generator().manual_seed(derive_seed(self.config.seed, int(index), "noise")),
            )
            total += float(draw.mask.sum()) * batch["hr"].shape[1]
        return torch.tensor(total)

    def _dump_gradients(self) -> None:
        """With YODA_SR_DUMP_GRADIENTS=FILE, rank 0 saves the first step's (reduced) gradients."""
        target = os.environ.get("YODA_SR_DUMP_GRADIENTS")
        if not target or self.state.step != 0 or not self.dist.main:
            return
        from safetensors.torch import save_file

        grads = {
            name: p.grad.detach().cpu().contiguous() for name, p in self.model.named_parameters() if p.grad is not None
        }
        save_file(grads, target)

    # -- validation --

    def _val_batch(self) -> dict[str, Tensor]:
        """Fixed validation crops: centre crops of the validation images (or of training images)."""
        from .imaging import resize_bicubic

        sources = self.val_sources or self.sources
        size = self.config.hr_size
        hr, attention = [], []
        for source in sources[: self.config.val_images]:
            height, width = source.hr.shape[-2:]
            top, left = (height - size) // 2, (width - size) // 2
            hr.append(source.hr[:, top : top + size, left : left + size].float() / 127.5 - 1)
            attention.append(
                torch.ones(1, size, size)
                if source.attention is None
                else source.attention[:, top : top + size, left : left + size].float()
            )
        hr = torch.stack(hr)
        lr = resize_bicubic(hr, size=(size // self.scale, size // self.scale))
        count = hr.shape[0]
        return {
            "hr": hr,
            "lr": lr,
            "attention": torch.stack(attention),
            "plain": torch.zeros(count, dtype=torch.bool),
            "index": torch.arange(count) - 10**9,
        }

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        from .imaging import resize_bicubic, to_array
        from .metrics import image_metrics
        from .sampling import sample

        batch = self._val_batch()
        self.ema.eval()
        totals = [
            self._loss_terms(self.ema, {key: value[i : i + 1] for key, value in batch.items()})
            for i in range(batch["hr"].shape[0])
        ]
        val_loss = float(sum(t for t, _, _ in totals) / sum(c for _, c, _ in totals))
        hr, lr = batch["hr"].to(self.device), batch["lr"].to(self.device)
        x_up = resize_bicubic(lr, size=hr.shape[-2:])
        cond = self.ema.prepare(lr, x_up)
        schedule = self.schedule.respace(min(self.config.val_steps, self.schedule.train_steps))
        attention = None if self.config.attention == "none" else batch["attention"].to(self.device)
        generators = [torch.Generator(device=self.device).manual_seed(1000 + i) for i in range(hr.shape[0])]
        result = sample(
            self.ema, cond, schedule, attention=attention, lower_bound=self.config.lower_bound, generator=generators
        )
        scores = [
            image_metrics(to_array(result.image[i : i + 1]), to_array(hr[i : i + 1]), self.scale)
            for i in range(hr.shape[0])
        ]
        bicubic = [
            image_metrics(to_array(x_up[i : i + 1]), to_array(hr[i : i + 1]), self.scale) for i in range(hr.shape[0])
        ]
        self._write_grid(lr, x_up, result.image, hr, batch["attention"])
        return {
            "val_loss": val_loss,
            "val_psnr": float(np.mean([s["psnr_y"] for s in scores])),
            "val_ssim": float(np.mean([s["ssim_y"] for s in scores])),
            "bicubic_psnr": float(np.mean([s["psnr_y"] for s in bicubic])),
        }

    def _write_grid(self, lr: Tensor, x_up: Tensor, sr: Tensor, hr: Tensor, attention: Tensor) -> None:
        from .attention.render import heatmap
        from .imageio import save_png
        from .imaging import to_array

        lr_big = torch.nn.functional.interpolate(lr, size=hr.shape[-2:], mode="nearest")
        rows = []
        for i in range(hr.shape[0]):
            tiles = [to_array(images[i : i + 1]) for images in (lr_big, x_up, sr, hr)]
            tiles.append(heatmap(attention[i, 0].cpu().numpy()))
            rows.append(np.concatenate(tiles, axis=1))
        (self.out / "samples").mkdir(parents=True, exist_ok=True)
        save_png(np.concatenate(rows, axis=0), self.out / "samples" / f"step_{self.state.step:06d}.png")

    # -- records --

    def _record(self, row: dict[str, float]) -> None:
        self.state.history.append(row)
        path = self.out / "metrics.csv"
        columns = ["step", "loss", "lr", "seconds", "val_loss", "val_psnr", "val_ssim", "bicubic_psnr"]
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for entry in self.state.history:
                writer.writerow({key: entry.get(key, "") for key in columns})
        from .plots import line_plot

        train = [(r["step"], r["loss"]) for r in self.state.history if "loss" in r]
        val = [(r["step"], r["val_loss"]) for r in self.state.history if "val_loss" in r]
        line_plot({"train loss": train, "validation loss": val}, self.out / "loss.png", "loss (masked L1)")
        psnr = [(r["step"], r["val_psnr"]) for r in self.state.history if "val_psnr" in r]
        bicubic = [(r["step"], r["bicubic_psnr"]) for r in self.state.history if "bicubic_psnr" in r]
        line_plot({"validation PSNR-Y": psnr, "bicubic": bicubic}, self.out / "psnr.png", "PSNR-Y (dB)")

    def run(self) -> Path:
        config = self.config
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            if not config.resume and self._state_path().exists():
                raise UsageError(
                    f"{self.out} already holds a run; pass --resume to continue it or choose another --out"
                )
        if config.resume:
            self._resume()
        if self.dist.main:
            (self.out / "config.toml").write_text(_to_toml(asdict(config)))
        if self.state.step >= config.iterations:
            self._main_log(f"{self.out} is already at step {self.state.step} of {config.iterations}")
            return self.out / "weights" / "ema.safetensors"
        from tqdm import tqdm

        bar = tqdm(
            total=config.iterations,
            initial=self.state.step,
            unit="it",
            file=sys.stderr,
            disable=not self.dist.main or not sys.stderr.isatty(),
            dynamic_ncols=True,
        )
        batches = self._batches()
        start = time.perf_counter()
        running = []
        while self.state.step < config.iterations:
            loss = self._step(batches)
            running.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            step = self.state.step
            if step % self.val_every == 0 or step == config.iterations:
                row = {
                    "step": step,
                    "loss": float(np.mean(running)),
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "seconds": time.perf_counter() - start,
                }
                running = []
                if self.dist.main:
                    row.update(self.validate())
                    self._record(row)
                    self.log(
                        f"step {step}: loss {row['loss']:.4f}, val loss {row['val_loss']:.4f}, "
                        f"val PSNR-Y {row['val_psnr']:.2f} dB (bicubic {row['bicubic_psnr']:.2f})"
                    )
            if step % self.save_every == 0 or step == config.iterations:
                if self.dist.main:
                    self._save_state()
                if self.dist.world > 1:
                    dist.barrier()
        bar.close()
        if self.dist.world > 1:
            dist.barrier()
        return self.out / "weights" / "ema.safetensors"


def _to_toml(values: dict[str, Any]) -> str:
    lines = ["# yoda-sr train: the resolved settings of this run (usable as --config)"]
    for key, value in values.items():
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
