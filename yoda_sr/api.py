"""The library façade: ``Upscaler.from_pretrained(name).upscale(image)``.

The CLI is a thin layer over this. An ``Upscaler`` holds one loaded denoiser and its defaults (from
the checkpoint's metadata: steps, sampler, attention method, lower bound; its photo model for LR the
cleaning changed, loaded when first needed); ``upscale`` takes an H x W x 3 uint8/uint16 array and
returns the super-resolved array of the same dtype.

Reproducibility: all noise is drawn on the CPU from one generator per image, seeded by the caller
(the CLI derives it from a base seed and the image's relative path), and the denoiser is called one
image at a time, so an image's result depends on nothing else in its batch, on the batch size, or
on how inputs are sharded across processes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from . import checkpoints
from .diffusion.masking import validate_flat_floor, validate_lower_bound
from .diffusion.processes import PROCESSES, SAMPLERS, process_of, schedule_spec
from .errors import SettingError, YodaError, checked, setting
from .image.conditioning import x_up_recipe
from .image.imaging import join_channels, split_channels
from .image.restoration import Cleaning, clean, validate_mode
from .models.validation import default_clean
from .runtime.compiled import CompiledDenoiser
from .runtime.devices import resolve_device, resolve_dtype
from .runtime.memory import BUDGET_FRACTION, bytes_per_pixel, memory_budget, plan
from .runtime.sparse import resolve_block
from .runtime.tiling import auto_tile_side, check_tile_settings, lr_multiple, tile_side
from .runtime.window import SamplingSpec
from .settings import DEFAULT_MODEL, Resolved, Result, Settings, parse_photo_model

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from .models.base import SRDenoiser
    from .runtime.tiling import Denoise


class Upscaler:
    """A loaded denoiser with its defaults, ready to super-resolve images."""

    def __init__(self, loaded: checkpoints.LoadedDenoiser, device: torch.device, dtype: torch.dtype) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.metadata = loaded.metadata
        self.device = device
        self.dtype = dtype
        self.scale = int(self.model.info.scale)

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
            clean=default_clean(self.metadata),
            photo_model=loaded.photo_model or "off",
        )
        self.mask_input = bool(yoda.get("mask_input", bool(yoda)))
        self.x_up = x_up_recipe(self.metadata)
        """How the condition x_up is built (``conditioning``): as the model's training data was."""
        self.denoise: Denoise = self.model
        """How the sampler calls the denoiser: the model, or a compiled one (``compile``)."""
        self._float_model: SRDenoiser | None = None
        self._pixel_bytes: dict[torch.dtype, int] = {}
        self._channels_last = device.type == "cpu"
        self._photo: dict[str, Upscaler] = {}

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

        device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        torch_dtype = resolve_dtype(dtype, device)
        loaded = checkpoints.load_denoiser(name_or_path or DEFAULT_MODEL, device=device, dtype=torch_dtype)
        if device.type == "cpu" if channels_last is None else channels_last:
            loaded.model.to(memory_format=torch.channels_last)
        upscaler = cls(loaded, device, torch_dtype)
        upscaler._channels_last = bool(device.type == "cpu" if channels_last is None else channels_last)
        if compile:
            upscaler.compile()
        return upscaler

    def compile(self, on_failure: Callable[[str], None] | None = None) -> None:
        """Run the denoiser through ``torch.compile`` from now on (``compiled``: for long jobs; one graph
        per tile shape; uncompiled after one ``on_failure`` line if it cannot compile)."""

        self.denoise = CompiledDenoiser(self.model, on_failure=on_failure)

    @property
    def name(self) -> str:
        return self.loaded.name

    def resolve(self, settings: Settings | Resolved) -> Resolved:
        """``settings`` with the model's defaults filled in, validated: SettingError names the field."""
        from .attention import METHODS

        request = settings.request() if isinstance(settings, Resolved) else settings
        defaults = self.defaults
        steps = defaults.steps if request.steps is None else request.steps
        sampler = (request.sampler or defaults.sampler or self.samplers[0]).lower()
        eta = defaults.eta if request.eta is None else request.eta
        attention = request.attention if request.attention not in (None, "auto") else defaults.attention
        lower_bound = defaults.lower_bound if request.lower_bound is None else request.lower_bound
        flat_floor = defaults.flat_floor if request.flat_floor is None else request.flat_floor
        stream = str(request.stream).strip().lower()
        assert steps is not None and eta is not None and lower_bound is not None and attention is not None
        if not 1 <= steps <= self.schedule_spec.steps:
            raise SettingError("steps", f"must be 1..{self.schedule_spec.steps} for this model, got {steps}")
        if sampler not in self.samplers:
            raise SettingError("sampler", f"must be {' or '.join(self.samplers)} for this model, not {sampler}")
        if not 0 <= eta < math.inf:
            raise SettingError("eta", f"must be a finite number >= 0, got {eta}")
        if eta and not PROCESSES[self.process].eta:
            raise SettingError("eta", f"this model's {self.process} process takes no eta, got {eta}")
        if attention not in METHODS:
            raise SettingError("attention", f"must be auto or one of {', '.join(METHODS)}, got {attention!r}")
        checked("lower_bound", validate_lower_bound, lower_bound)
        checked("flat_floor", validate_flat_floor, float(flat_floor or 0.0))
        clean = checked("clean", validate_mode, (defaults.clean or "auto") if request.clean is None else request.clean)
        photo_model = parse_photo_model(defaults.photo_model if request.photo_model is None else request.photo_model)
        check_tile_settings(request.tile, request.tile_overlap, self.model.info.size_multiple, request.tile_batch)
        if stream not in ("auto", "on", "off"):
            raise SettingError("stream", f"must be auto, on or off, got {request.stream!r}")
        if stream == "on" and request.tile == 0:
            raise SettingError("stream", "streaming works in tiles; it needs tile auto or a tile size, not 0")
        budget = request.memory_budget
        if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < 1):
            raise SettingError("memory_budget", f"must be a positive number of bytes, got {budget!r}")
        return Resolved(
            steps=steps,
            sampler=sampler,
            eta=eta,
            attention=attention,
            lower_bound=lower_bound,
            flat_floor=float(flat_floor or 0.0),
            clean=clean,
            photo_model=photo_model,
            tile=request.tile,
            tile_overlap=request.tile_overlap,
            tile_batch=request.tile_batch,
            stream=stream,
            memory_budget=budget,
            sparse=request.sparse,
            block=resolve_block(request.block, request.sparse, self.model.info.size_multiple),
        )

    def _tile_side(self, tile: int | str, height: int, width: int, stream: bool = False) -> int | None:
        """HR tile side, or None for no tiling (``tiling.tile_side``)."""

        auto = auto_tile_side(self.device, self.metadata["hparams"]) if tile == "auto" else 0
        return tile_side(tile, height, width, self.model.info.size_multiple, self.scale, auto, stream)

    def upscale(
        self,
        image: np.ndarray | PILImage,
        *,
        seed: int = 0,
        scale: int | None = None,
        settings: Settings | Resolved | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Result:
        """Super-resolve one image by ``scale`` (default: the model's).

        ``image`` is a PIL image or an array: H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA), uint8
        or uint16. The result has the same layout and dtype: grey stays grey, and alpha is upscaled
        with the project's bicubic and re-attached (``Result.to_pil()`` gives a PIL image).
        """

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
        settings: Settings | Resolved | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Result]:
        """Super-resolve images of one size together (the sampler loop runs once for the batch)."""
        resolved = self.resolve(settings or Settings())
        scale = self.scale if scale is None else int(scale)
        if scale < 1 or scale > self.scale:
            raise SettingError("scale", f"{scale}: this model upscales by {self.scale} (or less)")
        shapes = {image.shape for image in images}
        if len(shapes) != 1 or len(seeds) != len(images):
            raise ValueError("upscale_batch takes images of one shape and one seed per image")

        start = time.perf_counter()
        cleaned = [clean(image, resolved.clean) for image in images]
        chosen = [self.for_cleaning(cleaning, resolved) for _, cleaning in cleaned]
        by_index: dict[int, Result] = {}
        for upscaler in dict.fromkeys(chosen):  # the model and/or its photo model; each image by itself
            indices = [index for index, one in enumerate(chosen) if one is upscaler]
            lrs, own_seeds = [cleaned[i][0] for i in indices], [seeds[i] for i in indices]
            by_index.update(
                zip(indices, upscaler._sample_batch(lrs, own_seeds, scale, resolved, progress), strict=True)
            )
        results, elapsed = [by_index[index] for index in range(len(images))], time.perf_counter() - start
        for result, upscaler, (_, cleaning) in zip(results, chosen, cleaned, strict=True):
            result.model, result.model_sha256, result.cleaning = upscaler.name, upscaler.loaded.sha256, cleaning
            result.seconds = elapsed / len(results)
        return results

    def for_cleaning(self, cleaning: Cleaning, settings: Resolved) -> Upscaler:
        """The upscaler for an LR cleaned as ``cleaning`` says: the photo model (``settings.photo_model``,
        loaded once) for a deblocked JPEG, else this one (docs/method.md §12: denoised LR stays here)."""
        if cleaning.kind != "jpeg" or settings.photo_model == "off":
            return self
        if settings.photo_model not in self._photo:
            self._photo[settings.photo_model] = self._load_photo_model(settings.photo_model)
        return self._photo[settings.photo_model]

    def _load_photo_model(self, name: str) -> Upscaler:
        """``name`` loaded like this model (device, dtype, layout, compilation); refused in one
        ``photo_model`` line unless it samples the same way (scale, process, noise schedule)."""
        try:
            loaded = checkpoints.load_denoiser(name, device=self.device, dtype=self.dtype)
        except YodaError as error:
            raise SettingError("photo_model", str(error)) from None
        photo = Upscaler(loaded, self.device, self.dtype)
        pairs = {"scale": (self.scale, photo.scale), "process": (self.process, photo.process),
                 "noise schedule": (self.schedule_spec, photo.schedule_spec)}  # fmt: skip
        if differences := [what for what, (ours, theirs) in pairs.items() if ours != theirs]:
            raise SettingError("photo_model", f"{name} cannot stand in for {self.name}: its "
                               f"{' and '.join(differences)} differ; name a model trained like it, or off")  # fmt: skip
        if self._channels_last:
            photo.model.to(memory_format=torch.channels_last)
        if isinstance(self.denoise, CompiledDenoiser):
            photo.compile(self.denoise.on_failure)
        return photo

    def _sample_batch(
        self,
        images: Sequence[np.ndarray],
        seeds: Sequence[int],
        scale: int,
        settings: Resolved,
        progress: Callable[[int, int], None] | None,
    ) -> list[Result]:
        """``upscale_batch`` after cleaning: sample, with smaller tiles after a GPU out-of-memory error."""
        try:
            results = self._sample(images, seeds, scale, settings, self.dtype, progress)
        except torch.cuda.OutOfMemoryError:
            if settings.tile == 0:
                raise SettingError("tile", "out of GPU memory without tiling; use auto or a tile size") from None
            torch.cuda.empty_cache()
            height, width = images[0].shape[0] * self.scale, images[0].shape[1] * self.scale
            current = self._tile_side(settings.tile, height, width) or max(height, width)
            smaller = current // 2
            if smaller < 2 * self.model.info.size_multiple:
                raise SettingError("device", "out of GPU memory even with the smallest tile; use the CPU") from None
            return self._sample_batch(images, seeds, scale, dataclasses.replace(settings, tile=smaller), progress)
        except _NonFinite:
            results = self._sample(images, seeds, scale, settings, torch.float32, progress)
        for image, result in zip(images, results, strict=True):
            if not result.image.any() and image.any():
                raise YodaError("the model produced an all-black image; it was not written")
        return results

    def _sample(
        self,
        images: Sequence[np.ndarray],
        seeds: Sequence[int],
        scale: int,
        settings: Resolved,
        dtype: torch.dtype,
        progress: Callable[[int, int], None] | None,
    ) -> list[Result]:
        """Images of one shape, whole (in runs that fit the memory budget) or streamed (``memory.plan``)."""
        from .runtime.streaming import stream_images
        from .runtime.whole import upscale_whole

        model = self._model_in(dtype)
        multiple = lr_multiple(self.model.info.size_multiple, self.scale)
        hr_size = [-(-side // multiple) * multiple * self.scale for side in images[0].shape[:2]]
        if dtype not in self._pixel_bytes:
            self._pixel_bytes[dtype] = bytes_per_pixel(model, dtype)
        budget = settings.memory_budget or memory_budget(self.device)
        chosen = plan(hr_size[0] * hr_size[1], self._pixel_bytes[dtype], budget, stream=settings.stream,
                      tiling=settings.tile != 0)  # fmt: skip
        if not chosen.streamed and chosen.needed > budget / BUDGET_FRACTION:  # more than the whole memory
            way = "stream" if settings.stream == "off" else "tile"
            fix = setting("stream", "auto") if way == "stream" else setting("tile", "auto")
            raise SettingError(
                way,
                f"a {hr_size[1]}x{hr_size[0]} output sampled whole needs about {chosen.needed / 2**30:.1f} GiB, more "
                f"than the {budget / BUDGET_FRACTION / 2**30:.1f} GiB there are; {fix} streams it in tiles",
            )
        spec = SamplingSpec(
            schedule=self.schedule_spec.build().respace(settings.steps),
            sampler=settings.sampler,
            eta=settings.eta,
            attention=settings.attention,
            lower_bound=settings.lower_bound,
            mask_input=self.mask_input,
            dtype=dtype,
            x_up=self.x_up,
            sparse=settings.sparse,
            block=settings.block,
            denoise=self.denoise if model is self.model else None,
            flat_floor=settings.flat_floor if settings.attention != "none" else 0.0,
        )

        def check(image: Tensor) -> None:
            if not torch.isfinite(image).all():
                if dtype != torch.float32:
                    raise _NonFinite
                raise YodaError("the model produced non-finite values (also in fp32); the image was not written")

        if chosen.streamed:
            tile = self._tile_side(settings.tile, 0, 0, stream=True)
            assert tile is not None
            upscaled = stream_images(
                model, images, seeds, scale, spec, tile_side=tile, overlap=settings.tile_overlap, device=self.device,
                progress=progress, check=check,
            )  # fmt: skip
        else:
            tile = self._tile_side(settings.tile, *hr_size)
            upscaled = []
            for first in range(0, len(images), chosen.per_run):
                part = slice(first, first + chosen.per_run)
                count = len(images[part])

                def offset(done: int, total: int, first: int = first, count: int = count) -> None:
                    assert progress is not None
                    progress(first * total // count + done, len(images) * total // count)

                upscaled += upscale_whole(
                    model, images[part], seeds[part], scale, spec, device=self.device, tile=tile,
                    overlap=settings.tile_overlap, tile_batch=settings.tile_batch, progress=progress and offset,
                    check=check,
                )  # fmt: skip
        return [
            Result(
                image=one.image,
                attention=one.attention,
                update_fraction=one.update_fraction,
                seconds=0.0,
                steps=settings.steps,
                sampler=settings.sampler,
                attention_method=settings.attention,
                lower_bound=settings.lower_bound,
                tile=tile,
                dtype=str(dtype).removeprefix("torch."),
                streamed=chosen.streamed,
                work_fraction=one.work_fraction,
                sparse=settings.sparse,
                block=settings.block,
                flat_floor=spec.flat_floor,
            )
            for one in upscaled
        ]

    def _model_in(self, dtype: torch.dtype) -> SRDenoiser:
        """The denoiser in ``dtype`` (a float32 copy is made once for retries of fp16/bf16 runs)."""
        if dtype == self.dtype:
            return self.model
        if self._float_model is None:
            import copy

            self._float_model = copy.deepcopy(self.model).to(dtype=dtype)
        return self._float_model


class _NonFinite(Exception):
    """A reduced-precision run produced NaN or inf: retried in fp32."""
