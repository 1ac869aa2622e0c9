"""The library façade: ``Upscaler.from_pretrained(name).upscale(image)``.

The CLI is a thin layer over this. An ``Upscaler`` holds one loaded denoiser and its defaults (from
the checkpoint's metadata: steps, sampler, attention method, lower bound); ``upscale`` takes an
H x W x 3 uint8/uint16 array and returns the super-resolved array of the same dtype.

Reproducibility: all noise is drawn on the CPU from one generator per image, seeded by the caller
(the CLI derives it from a base seed and the image's relative path), and the denoiser is called one
image at a time, so an image's result depends on nothing else in its batch, on the batch size, or on
how inputs are sharded across processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from . import checkpoints
from .errors import SettingError, YodaError, checked
from .image.conditioning import x_up_recipe
from .runtime import memory
from .settings import Result, Settings

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from .models.base import SRDenoiser
    from .runtime.tiling import Denoise

DEFAULT_MODEL = "yoda-srdiff-x4"


class Upscaler:
    """A loaded denoiser with its defaults, ready to super-resolve images."""

    def __init__(self, loaded: checkpoints.LoadedDenoiser, device: torch.device, dtype: torch.dtype) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.metadata = loaded.metadata
        self.device = device
        self.dtype = dtype
        self.scale = int(self.model.info.scale)
        from .diffusion.processes import SAMPLERS, process_of, schedule_spec

        self.process = process_of(self.metadata)  # ddpm or resshift: what the network was trained for
        self.samplers = SAMPLERS[self.process]
        self.schedule_spec = schedule_spec(self.metadata)
        sampling = self.metadata.get("sampling") or {}
        yoda = self.metadata.get("yoda") or {}
        self.defaults = Settings(
            steps=int(sampling.get("steps", min(100, self.schedule_spec.steps))),
            sampler=str(sampling.get("sampler", self.samplers[0])),
            eta=float(sampling.get("eta", 0.0)),
            attention=str(yoda.get("attention", "none")),
            lower_bound=float(yoda.get("lower_bound", 0.2)),
            flat_floor=float(yoda.get("flat_floor", 0.0)),
        )
        self.mask_input = bool(yoda.get("mask_input", bool(yoda)))
        self.x_up = x_up_recipe(self.metadata)
        """How the condition x_up is built (``conditioning``): as the model's training data was."""
        self.denoise: Denoise = self.model
        """How the sampler calls the denoiser: the model, or a compiled one (``compile``)."""
        self._float_model: SRDenoiser | None = None
        self._pixel_bytes: dict[torch.dtype, int] = {}

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path | None = None,
        *,
        device: str | torch.device = "auto",
        dtype: str = "auto",
        compile: bool = False,
        channels_last: bool | None = None,
    ) -> Upscaler:
        """Load a named checkpoint, a .safetensors file or a training run folder.

        ``channels_last`` (default: on the CPU) lays the denoiser's weights out channels-last, which
        oneDNN's convolutions run faster; ``compile`` calls ``compile()``.
        """
        from .runtime.devices import resolve_device, resolve_dtype

        device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        torch_dtype = resolve_dtype(dtype, device)
        loaded = checkpoints.load_denoiser(name_or_path or DEFAULT_MODEL, device=device, dtype=torch_dtype)
        if device.type == "cpu" if channels_last is None else channels_last:
            loaded.model.to(memory_format=torch.channels_last)
        upscaler = cls(loaded, device, torch_dtype)
        if compile:
            upscaler.compile()
        return upscaler

    def compile(self, on_failure: Callable[[str], None] | None = None) -> None:
        """Run the denoiser through ``torch.compile`` from now on (``compiled``: for long jobs; one graph
        per tile shape; uncompiled after one ``on_failure`` line if it cannot compile)."""
        from .runtime.compiled import CompiledDenoiser

        self.denoise = CompiledDenoiser(self.model, on_failure=on_failure)

    @property
    def name(self) -> str:
        return self.loaded.name

    def resolve(self, settings: Settings) -> Settings:
        """``settings`` with the model's defaults filled in, validated."""
        from .attention import METHODS
        from .diffusion.processes import PROCESSES
        from .diffusion.masking import validate_flat_floor, validate_lower_bound
        from .image.restoration import validate_mode
        from .runtime.sparse import resolve_block
        from .runtime.tiling import check_tile_settings

        defaults = self.defaults
        merged = Settings(
            steps=defaults.steps if settings.steps is None else settings.steps,
            sampler=(settings.sampler or defaults.sampler or self.samplers[0]).lower(),
            eta=defaults.eta if settings.eta is None else settings.eta,
            attention=settings.attention if settings.attention not in (None, "auto") else defaults.attention,
            lower_bound=defaults.lower_bound if settings.lower_bound is None else settings.lower_bound,
            flat_floor=defaults.flat_floor if settings.flat_floor is None else settings.flat_floor,
            clean=settings.clean,
            tile=settings.tile,
            tile_overlap=settings.tile_overlap,
            tile_batch=settings.tile_batch,
            stream=str(settings.stream).strip().lower(),
            memory_budget=settings.memory_budget,
            sparse=settings.sparse,
            block=settings.block,
        )
        steps, eta, lower_bound = merged.steps, merged.eta, merged.lower_bound
        assert steps is not None and eta is not None and lower_bound is not None
        if not 1 <= steps <= self.schedule_spec.steps:
            raise SettingError("steps", f"must be 1..{self.schedule_spec.steps} for this model, got {steps}")
        if merged.sampler not in self.samplers:
            raise SettingError("sampler", f"must be {' or '.join(self.samplers)} for this model, not {merged.sampler}")
        if not eta >= 0:
            raise SettingError("eta", f"must be >= 0, got {eta}")
        if eta and not PROCESSES[self.process].eta:
            raise SettingError("eta", f"this model's {self.process} process takes no eta, got {eta}")
        if merged.attention not in METHODS:
            raise SettingError("attention", f"must be auto or one of {', '.join(METHODS)}, got {merged.attention!r}")
        checked("lower_bound", validate_lower_bound, lower_bound)
        checked("flat_floor", validate_flat_floor, float(merged.flat_floor or 0.0))
        merged.clean = checked("clean", validate_mode, merged.clean)
        check_tile_settings(merged.tile, merged.tile_overlap, self.model.info.size_multiple, merged.tile_batch)
        if merged.stream not in ("auto", "on", "off"):
            raise SettingError("stream", f"must be auto, on or off, got {settings.stream!r}")
        if merged.stream == "on" and merged.tile == 0:
            raise SettingError("stream", "streaming works in tiles; it needs tile auto or a tile size, not 0")
        merged.block = resolve_block(merged.block, merged.sparse, self.model.info.size_multiple)
        budget = merged.memory_budget
        if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < 1):
            raise SettingError("memory_budget", f"must be a positive number of bytes, got {budget!r}")
        return merged

    def _tile_side(self, tile: int | str, height: int, width: int, stream: bool = False) -> int | None:
        """HR tile side, or None for no tiling (``tiling.tile_side``)."""
        from .runtime.tiling import auto_tile_side, tile_side

        auto = auto_tile_side(self.device, self.metadata["hparams"]) if tile == "auto" else 0
        return tile_side(tile, height, width, self.model.info.size_multiple, self.scale, auto, stream)

    def upscale(
        self,
        image: np.ndarray | PILImage,
        *,
        seed: int = 0,
        scale: int | None = None,
        settings: Settings | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Result:
        """Super-resolve one image by ``scale`` (default: the model's).

        ``image`` is a PIL image or an array: H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA), uint8
        or uint16. The result has the same layout and dtype: grey stays grey, and alpha is upscaled
        with the project's bicubic and re-attached (``Result.to_pil()`` gives a PIL image).
        """
        from .image.imaging import join_channels, split_channels

        rgb, alpha, grey = split_channels(image)
        result = self.upscale_batch([rgb], seeds=[seed], scale=scale, settings=settings, progress=progress)[0]
        result.image = join_channels(result.image, alpha, grey)
        return result

    def upscale_batch(
        self,
        images: Sequence[np.ndarray],
        *,
        seeds: Sequence[int],
        scale: int | None = None,
        settings: Settings | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Result]:
        """Super-resolve images of one size together (the sampler loop runs once for the batch)."""
        settings = self.resolve(settings or Settings())
        scale = self.scale if scale is None else int(scale)
        if scale < 1 or scale > self.scale:
            raise SettingError("scale", f"{scale}: this model upscales by {self.scale} (or less)")
        shapes = {image.shape for image in images}
        if len(shapes) != 1 or len(seeds) != len(images):
            raise ValueError("upscale_batch takes images of one shape and one seed per image")
        from .image.restoration import clean

        start = time.perf_counter()
        cleaned = [clean(image, settings.clean) for image in images]
        results = self._sample_batch([image for image, _ in cleaned], seeds, scale, settings, progress)
        elapsed = time.perf_counter() - start
        for result, (_, cleaning) in zip(results, cleaned, strict=True):
            result.seconds = elapsed / len(results)
            result.cleaning = cleaning
        return results

    def _sample_batch(
        self,
        images: Sequence[np.ndarray],
        seeds: Sequence[int],
        scale: int,
        settings: Settings,
        progress: Callable[[int, int], None] | None,
    ) -> list[Result]:
        """``upscale_batch`` after cleaning: sample, with smaller tiles after a GPU out-of-memory error."""
        try:
            results = memory.run(self, images, seeds, scale, settings, self.dtype, progress)
        except torch.cuda.OutOfMemoryError:
            if settings.tile == 0:
                raise YodaError("out of GPU memory without tiling; try --tile auto or a smaller --tile") from None
            torch.cuda.empty_cache()
            height, width = images[0].shape[0] * self.scale, images[0].shape[1] * self.scale
            current = self._tile_side(settings.tile, height, width) or max(height, width)
            smaller = current // 2
            if smaller < 2 * self.model.info.size_multiple:
                raise YodaError("out of GPU memory even with the smallest tile; try --device cpu") from None
            settings.tile = smaller
            return self._sample_batch(images, seeds, scale, settings, progress)
        except _NonFinite:
            results = memory.run(self, images, seeds, scale, settings, torch.float32, progress)
        for image, result in zip(images, results, strict=True):
            if not result.image.any() and image.any():
                raise YodaError("the model produced an all-black image; it was not written")
        return results

    def _model_in(self, dtype: torch.dtype) -> SRDenoiser:
        """The denoiser in ``dtype`` (a float32 copy is made once for retries of fp16/bf16 runs)."""
        if dtype == self.dtype:
            return self.model
        if self._float_model is None:
            import copy

            self._float_model = copy.deepcopy(self.model).to(dtype=dtype)
        return self._float_model

    def _result(
        self, image: np.ndarray, attention: np.ndarray | None, fraction: float, settings: Settings, tile: int | None,
        dtype: torch.dtype, streamed: bool = False, work: float = 1.0,
    ) -> Result:  # fmt: skip
        """A Result with the run's settings (images, maps and fractions as ``_run`` or streaming made them)."""
        assert settings.steps is not None and settings.sampler is not None and settings.attention is not None
        assert settings.lower_bound is not None and isinstance(settings.block, int)
        steps, sampler, method, bound = settings.steps, settings.sampler, settings.attention, settings.lower_bound
        name, extra = str(dtype).removeprefix("torch."), (streamed, work, settings.sparse, settings.block)
        flat = float(settings.flat_floor or 0.0) if method != "none" else 0.0
        return Result(image, attention, fraction, 0.0, steps, sampler, method, bound, tile, name, *extra, flat)

    @staticmethod
    def _check_finite(image: Tensor, dtype: torch.dtype) -> None:
        """Raise for NaN or inf in a sampled image: retried in fp32, or an error in fp32."""
        if not torch.isfinite(image).all():
            if dtype != torch.float32:
                raise _NonFinite
            raise YodaError("the model produced non-finite values (also in fp32); the image was not written")

    @torch.inference_mode()
    def _run(
        self,
        images: Sequence[np.ndarray],
        seeds: Sequence[int],
        scale: int,
        settings: Settings,
        dtype: torch.dtype,
        progress: Callable[[int, int], None] | None,
    ) -> list[Result]:
        """Prepare the condition and attention once, then sample through ``sampler.sample``."""
        from .attention import compute_attention
        from .diffusion.masking import flat_areas, update_fraction
        from .image.conditioning import upscale_condition
        from .image.imaging import resize_bicubic, to_tensor
        from .runtime.sampler import sample
        from .runtime.sparse import Evaluator, StepProgress
        from .runtime.tiling import lr_multiple, pad_to

        assert settings.steps is not None and settings.sampler is not None and settings.attention is not None
        assert settings.eta is not None and settings.lower_bound is not None and isinstance(settings.block, int)
        model = self._model_in(dtype)
        info = model.info
        bits_dtype = images[0].dtype
        lr = torch.cat([to_tensor(image) for image in images])
        if lr.shape[1] != 3:
            raise ValueError("Upscaler takes H x W x 3 images; convert greyscale to RGB first")
        lr, (height, width) = pad_to(lr, lr_multiple(info.size_multiple, self.scale))
        lr = lr.to(self.device)
        hr_size = (lr.shape[-2] * self.scale, lr.shape[-1] * self.scale)
        x_up = upscale_condition(lr, hr_size, self.x_up)
        cond = model.prepare(lr.to(dtype), x_up.to(dtype)).to(torch.float32)
        cond.x_up = x_up
        attention, flat = None, None
        if settings.attention != "none":
            attention = compute_attention(lr, settings.attention, hr_size=hr_size)
            if settings.flat_floor:
                flat = flat_areas(lr, settings.flat_floor, self.scale)

        schedule = self.schedule_spec.build().respace(settings.steps)
        tile = self._tile_side(settings.tile, *hr_size)
        evaluator = Evaluator(
            model,
            cond,
            tile=tile,
            overlap=settings.tile_overlap,
            block=settings.block,
            denoise=self.denoise if model is self.model else None,
            tile_batch=settings.tile_batch,
        )
        ticks = StepProgress(progress, schedule.num_steps, len(evaluator.tiles) * len(images))
        evaluator.watch(ticks.call)  # the evaluator runs the denoiser one image at a time
        sampled = sample(
            model,
            cond,
            schedule,
            sampler=settings.sampler,
            eta=settings.eta,
            attention=attention,
            lower_bound=settings.lower_bound,
            mask_input=self.mask_input,
            generator=[torch.Generator().manual_seed(int(seed)) for seed in seeds],
            eps_fn=evaluator.dense,
            masked_eps_fn=evaluator.masked if settings.sparse else None,
            block=settings.block,
            callback=ticks.step,
            flat=flat,
        )
        self._check_finite(sampled.image, dtype)
        window = (slice(None), slice(None), slice(0, height * self.scale), slice(0, width * self.scale))
        sr = sampled.image[window]
        if scale != self.scale:
            sr = resize_bicubic(sr, size=(height * scale, width * scale))
        return [
            self._result(
                _to_image(sr[i : i + 1], bits_dtype),
                None if attention is None else attention[window][i, 0].cpu().numpy(),
                1.0 if sampled.activation is None else update_fraction(sampled.activation[window][i], schedule.steps),
                settings,
                tile,
                dtype,
                work=evaluator.work_fraction(schedule.num_steps)[i],
            )
            for i in range(len(images))
        ]


class _NonFinite(Exception):
    """A reduced-precision run produced NaN or inf: retried in fp32."""


def _to_image(x: Tensor, dtype: np.dtype) -> np.ndarray:
    from .image.imaging import to_array

    return to_array(x.float(), dtype)
