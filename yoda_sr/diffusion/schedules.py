"""Noise schedules as data: gamma_t ("alpha-bar") over the training steps, and respacing.

A schedule is separate from any model (docs/method.md §2). ``NoiseSchedule.gammas`` holds gamma_t for
t = 0..T in float64 (gamma_0 = 1); ``steps`` holds the training-step numbers a sampler visits, in
ascending order and starting with 0. A respaced schedule keeps gamma unchanged at the kept steps, so a
model is always conditioned on its original noise level.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor

ScheduleKind = Literal["linear", "cosine"]
MAX_STEPS = 100_000
"""The most training steps a schedule may have (SR3 uses 2000; YODA 500)."""


def linear_betas(steps: int, start: float, end: float) -> Tensor:
    """Betas rising linearly from ``start`` to ``end`` over ``steps`` steps (SR3, DDPM)."""
    return torch.linspace(start, end, steps, dtype=torch.float64)


def cosine_betas(steps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal's cosine schedule, betas clipped at ``max_beta`` (SRDiff, SR4)."""
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


@dataclass(frozen=True)
class ScheduleSpec:
    """A serialisable description of a training schedule (stored in checkpoint metadata)."""

    kind: ScheduleKind = "linear"
    steps: int = 500
    start: float = 1e-6
    end: float = 0.03
    cosine_s: float = 0.008

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "cosine"):
            raise ValueError(f"unknown schedule kind {self.kind!r}: use 'linear' or 'cosine'")
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or not 1 <= self.steps <= MAX_STEPS:
            raise ValueError(f"a schedule has 1..{MAX_STEPS} steps, got {self.steps!r}")
        for name in ("start", "end", "cosine_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"schedule {name} must be a finite number, got {value!r}")
        if self.kind == "linear" and not 0 < self.start <= self.end < 1:
            raise ValueError(f"a linear schedule needs 0 < start <= end < 1, got {self.start} and {self.end}")
        if self.kind == "cosine" and not self.cosine_s > 0:
            raise ValueError(f"cosine_s must be > 0, got {self.cosine_s}")

    def build(self) -> NoiseSchedule:
        if self.kind == "linear":
            betas = linear_betas(self.steps, self.start, self.end)
        else:
            betas = cosine_betas(self.steps, self.cosine_s)
        return NoiseSchedule.from_betas(betas)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScheduleSpec:
        if not isinstance(data, dict):
            raise TypeError(f"a schedule is described by an object, got {type(data).__name__}")
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


@dataclass(frozen=True)
class NoiseSchedule:
    """gamma_t for every training step, and the subset of steps a sampler visits."""

    gammas: Tensor
    """float64, shape T + 1; gammas[0] = 1 and gammas[t] = prod_{i<=t} (1 - beta_i)."""
    steps: Tensor
    """int64, ascending, starting with 0: the training steps visited (all of 0..T unless respaced)."""

    @classmethod
    def from_betas(cls, betas: Tensor) -> NoiseSchedule:
        betas = betas.to(torch.float64)
        gammas = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])
        return cls(gammas=gammas, steps=torch.arange(len(betas) + 1))

    @property
    def train_steps(self) -> int:
        """T, the number of training steps (masks are defined over 1..T, docs/method.md §5)."""
        return len(self.gammas) - 1

    @property
    def num_steps(self) -> int:
        """How many denoising steps a sampler takes on this schedule."""
        return len(self.steps) - 1

    @property
    def step_gammas(self) -> Tensor:
        """gamma at the visited steps (float64, shape num_steps + 1)."""
        return self.gammas[self.steps]

    @property
    def betas(self) -> Tensor:
        """beta_i = 1 - gamma_{s_i} / gamma_{s_{i-1}} between consecutive visited steps."""
        g = self.step_gammas
        return 1 - g[1:] / g[:-1]

    def respace(self, num_steps: int) -> NoiseSchedule:
        """Keep ``num_steps`` evenly spaced training steps, always including T (docs/method.md §2)."""
        total = self.train_steps
        if not 1 <= num_steps <= total:
            raise ValueError(f"cannot respace a {total}-step schedule to {num_steps} steps (use 1..{total})")
        kept = [(i * total) // num_steps for i in range(num_steps + 1)]
        return NoiseSchedule(gammas=self.gammas, steps=torch.tensor(kept, dtype=torch.int64))
