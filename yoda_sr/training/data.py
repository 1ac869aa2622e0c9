"""Training data: images in memory with their attention maps, and samples as a pure function of
(seed, global sample index), so that a resumed or data-parallel run draws exactly the samples of an
uninterrupted single-process one (docs/method.md §6)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import checkpoints
from ..errors import SettingError, YodaError, setting
from ..fsutil import atomic_write
from ..image.degradations import random_degradation
from ..image.imaging import bicubic_degrade, resize_bicubic, to_array, to_tensor
from ..image.io import read_picture
from ..image.realistic import RealisticDegradation
from ..image.restoration import clean
from ..jobs.files import find_images
from ..seeds import derive_seed
from .config import TrainConfig

Batch = dict[str, Tensor]
"""hr (N x 3 x H x W), lr, attention (N x 1 x H x W), plain (bool, N), index (int64, N)."""


@dataclass
class Source:
    """One training image, kept in memory with its attention map at the same (HR) size."""

    path: Path
    hr: Tensor  # 3 x H x W uint8
    attention: Tensor | None  # 1 x H x W float16


def _attention_cache_dir() -> Path:
    return checkpoints.home() / "cache" / "attention"


def _source_attention(hr: Tensor, digest: str, method: str, scale: int) -> Tensor:
    """A of an HR image computed on its LR version (docs/method.md §4), cached on disk by content."""
    from ..attention import compute_attention

    height, width = hr.shape[-2:]
    cache = _attention_cache_dir() / f"{digest[:32]}-{method}-x{scale}-{height}x{width}.npy"
    if cache.is_file():
        try:
            return torch.from_numpy(np.load(cache, allow_pickle=False)).unsqueeze(0)
        except (OSError, ValueError):
            cache.unlink(missing_ok=True)
    image = hr.float().unsqueeze(0) / 127.5 - 1
    hr_cropped, lr = bicubic_degrade(image, scale)
    maps = compute_attention(lr, method, hr_size=(hr_cropped.shape[-2], hr_cropped.shape[-1]))[0, 0]
    full = torch.zeros(height, width)
    full[: maps.shape[0], : maps.shape[1]] = maps
    array = full.to(torch.float16).numpy()
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(cache, lambda handle: np.save(handle, array, allow_pickle=False))
    return torch.from_numpy(array).unsqueeze(0)


def load_sources(folder: str | Path, config: TrainConfig, scale: int, log: Callable[[str], None]) -> list[Source]:
    """Every readable image of ``folder`` (recursively) as a Source; bad ones are skipped with a warning."""

    folder = Path(folder)
    if not folder.is_dir():
        raise SettingError("data", f"{folder} is not a folder of images")
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
            log(f"warning: skipped {path}: smaller than {setting('hr_size', config.hr_size)}")
            continue
        attention = None
        if config.attention != "none":
            digest = hashlib.sha256(hr.numpy().tobytes()).hexdigest()
            attention = _source_attention(hr, digest, config.attention, scale)
        sources.append(Source(path, hr, attention))
    if not sources:
        raise YodaError(f"no usable training images in {folder}")
    return sources


def _window(source: Source, top: int, left: int, size: int) -> tuple[Tensor, Tensor]:
    """An HR crop in [-1, 1] and its attention (ones without a map)."""
    hr = source.hr[:, top : top + size, left : left + size].float() / 127.5 - 1
    if source.attention is None:
        return hr, torch.ones(1, size, size)
    return hr, source.attention[:, top : top + size, left : left + size].float()


class Samples(torch.utils.data.Dataset[Batch]):
    """Sample ``index`` of the run: a random crop (or whole face), flipped, with its A (the LR is made
    per micro-batch by ``Collate``)."""

    def __init__(self, sources: list[Source], config: TrainConfig, scale: int) -> None:
        self.sources = sources
        self.config = config
        self.scale = scale

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> Batch:
        generator = torch.Generator().manual_seed(derive_seed(self.config.seed, index, "data"))
        source = self.sources[int(torch.randint(len(self.sources), (1,), generator=generator))]
        size = self.config.hr_size
        height, width = source.hr.shape[-2:]
        top = int(torch.randint(height - size + 1, (1,), generator=generator))
        left = int(torch.randint(width - size + 1, (1,), generator=generator))
        hr, attention = _window(source, top, left, size)
        flips = torch.rand(2, generator=generator)
        if flips[0] < 0.5:
            hr, attention = hr.flip(-1), attention.flip(-1)
        if flips[1] < 0.5 and self.config.mode == "patches":
            hr, attention = hr.flip(-2), attention.flip(-2)
        plain = float(torch.rand(1, generator=generator)) < self.config.plain_fraction
        return {"hr": hr, "attention": attention, "plain": torch.tensor(plain), "index": torch.tensor(index)}


@dataclass(frozen=True)
class Collate:
    """Stacks samples into a micro-batch and degrades its HR crops to LR in one batched resize
    (per sample it cost a quarter of a tiny model's training step); with ``lr_noise`` or ``lr_jpeg``,
    each LR crop is then rounded to 8 bits and degraded as drawn from (seed, its global index).
    With ``lr_degradation = "realistic"`` each crop's 8-bit LR is instead drawn by
    ``RealisticDegradation`` from (seed, its global index). With ``lr_clean = "auto"`` each degraded
    8-bit LR crop then goes through ``upscale``'s cleaning (``restoration.clean``), as a user's LR will."""

    scale: int
    seed: int = 0
    lr_noise: float = 0.0
    lr_jpeg: int = 0
    lr_degradation: str = "bicubic"
    lr_clean: str = "off"

    def __call__(self, samples: list[Batch]) -> Batch:

        batch: Batch = torch.utils.data.default_collate(samples)
        if self.lr_degradation == "realistic":
            batch["lr"] = torch.cat(
                [self.realistic(hr, int(index)) for hr, index in zip(batch["hr"], batch["index"], strict=True)]
            )
            return batch
        height, width = batch["hr"].shape[-2:]
        batch["lr"] = resize_bicubic(batch["hr"], size=(height // self.scale, width // self.scale))
        if self.lr_noise > 0 or self.lr_jpeg > 0:
            batch["lr"] = torch.cat(
                [self.degrade(lr, int(index)) for lr, index in zip(batch["lr"], batch["index"], strict=True)]
            )
        return batch

    def degrade(self, lr: Tensor, index: int) -> Tensor:
        """One 3 x h x w LR crop in [-1, 1], rounded to 8 bits and randomly degraded (1 x 3 x h x w)."""

        generator = np.random.default_rng(derive_seed(self.seed, index, "degrade"))
        degradation = random_degradation(self.lr_noise, self.lr_jpeg, generator)
        return to_tensor(self.cleaned(degradation.apply(to_array(lr.unsqueeze(0)), generator)))

    def realistic(self, hr: Tensor, index: int) -> Tensor:
        """The realistic LR (1 x 3 x h x w, 8-bit levels in [-1, 1]) of one 3 x H x W HR crop, whose
        values are 8-bit levels already (a crop of a uint8 source), so ``to_array`` gives them back exactly."""

        generator = np.random.default_rng(derive_seed(self.seed, index, "degrade"))
        return to_tensor(self.cleaned(REALISTIC.apply(to_array(hr), self.scale, generator)))

    def cleaned(self, lr: np.ndarray) -> np.ndarray:
        """An 8-bit LR crop as ``upscale --clean {lr_clean}`` would hand it to the model."""
        return clean(lr, self.lr_clean)[0]


REALISTIC = RealisticDegradation()
"""The ranges ``lr_degradation = "realistic"`` draws from (docs/method.md §6)."""


def noise_generators(seed: int, indices: Tensor, purpose: str = "noise") -> list[torch.Generator]:
    """One generator per sample, seeded from (seed, global sample index, purpose): "noise" for its t
    and eps draws, "unroll" for the noise of its unrolled sample."""
    return [torch.Generator().manual_seed(derive_seed(seed, int(index), purpose)) for index in indices]


class SampleIndices(torch.utils.data.Sampler[int]):
    """The global sample indices this rank takes, step after step, from ``first_step`` on.

    Micro-batch m of step s covers global indices (s * grad_accum + m) * W * B .. + W * B - 1;
    rank r takes its B consecutive ones starting at r * B.
    """

    def __init__(self, first_step: int, per_step: int, grad_accum: int, rank: int, world: int) -> None:
        self.first_step, self.per_step, self.grad_accum = first_step, per_step, grad_accum
        self.rank, self.world = rank, world

    def __iter__(self) -> Iterator[int]:
        step = self.first_step
        global_batch = self.per_step * self.world
        while True:
            for micro in range(self.grad_accum):
                base = (step * self.grad_accum + micro) * global_batch + self.rank * self.per_step
                yield from range(base, base + self.per_step)
            step += 1

    def __len__(self) -> int:
        return 2**62


def batches(
    sources: list[Source], config: TrainConfig, scale: int, first_step: int, rank: int, world: int
) -> Iterator[Batch]:
    """This rank's micro-batches from ``first_step`` on (``grad_accum`` of them per step)."""
    loader = torch.utils.data.DataLoader(
        Samples(sources, config, scale),
        batch_size=config.batch_size,
        collate_fn=Collate(scale, config.seed, config.lr_noise, config.lr_jpeg, config.lr_degradation, config.lr_clean),
        sampler=SampleIndices(first_step, config.batch_size, config.grad_accum, rank, world),
        num_workers=config.num_workers,
        persistent_workers=config.num_workers > 0,
    )
    return iter(loader)


def validation_batch(sources: Sequence[Source], count: int, size: int, scale: int) -> Batch:
    """Fixed validation crops: centre crops of the first ``count`` images (indices below 0, so their
    noise draws never meet a training sample's)."""

    windows = [
        _window(source, (source.hr.shape[-2] - size) // 2, (source.hr.shape[-1] - size) // 2, size)
        for source in sources[:count]
    ]
    hr = torch.stack([hr for hr, _ in windows])
    n = hr.shape[0]
    return {
        "hr": hr,
        "lr": resize_bicubic(hr, size=(size // scale, size // scale)),
        "attention": torch.stack([attention for _, attention in windows]),
        "plain": torch.zeros(n, dtype=torch.bool),
        "index": torch.arange(n) - 10**9,
    }
