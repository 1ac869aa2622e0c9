"""ResShift residual shifting (Yue et al., 2023), plain and YODA-masked (docs/method.md §10).

A second diffusion process beside DDPM/DDIM. Its chain starts from the known image y0 plus noise
and shifts the residual y0 - x0 away step by step; the network predicts x0. With eta_0 = 0 < eta_1
< ... < eta_T < 1 and a noise scale kappa:

    forward marginal   x_t = x0 + eta_t (y0 - x0) + kappa sqrt(eta_t) eps
    posterior          x_{t-1} = (eta_{t-1} / eta_t) x_t + (alpha_t / eta_t) x0
                                 + kappa sqrt(eta_{t-1} alpha_t / eta_t) eps,   alpha_t = eta_t - eta_{t-1}
    start              x_T = y0 + kappa sqrt(eta_T) eps

y0 and x0 live in the model's diffusion space: y0 is ``model.known_region``, x_up in image space
(SR3) and 0 in residual space (SRDiff, whose residual is measured from its base, the bicubic upscale
or its regression output). The network sees x_t / sqrt(1 + kappa^2 eta_t), conditioned on the step t
and on sqrt(1 - eta_t) as its noise level.

YODA (eqs. 9, 11, 14 carried over): at a visited step t with mask M(t), the network input is
y0 + M(t) (x_t - y0) (eq. 11's zeros are the known mean, 0 in residual space), active pixels take
the posterior step and the others the known region's forward marginal at the next visited step,
y0 + kappa sqrt(eta_{t-1}) eps'. Steps at which every pixel is active blend nothing and draw no eps',
so A = 1 is plain ResShift bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from .process import NoiseSampler, Process, Step

PROCESS = "resshift"
SAMPLER = "resshift"
"""The one sampler of the process (the posterior above); upscale's ``--sampler`` names it."""
MAX_STEPS = 1000


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class ResShiftSpec:
    """ResShift's exponential eta schedule as data (stored as a checkpoint's ``schedule``).

    sqrt(eta_t) = sqrt(eta_1) * b^(beta_t) with beta_t = ((t - 1) / (T - 1))^power * (T - 1) and
    b = (eta_T / eta_1)^(1 / (2 (T - 1))): eta_1 at t = 1, eta_T at t = T, growing faster early for
    power < 1 (ResShift paper eq. 10; upstream ``get_named_eta_schedule('exponential')``, whose
    ``min_noise_level`` m and ``etas_end`` e are eta_1 = min(m / kappa, m)^2 and eta_T = e^2).
    The defaults are upstream's 15-step x4 recipe (m = 0.04, e = 0.99, kappa = 2, power 0.3).
    """

    kind: str = "exponential"
    steps: int = 15
    kappa: float = 2.0
    eta_first: float = 4e-4
    eta_last: float = 0.9801
    power: float = 0.3

    def __post_init__(self) -> None:
        if self.kind != "exponential":
            raise ValueError(f"unknown ResShift schedule kind {self.kind!r}: use 'exponential'")
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or not 2 <= self.steps <= MAX_STEPS:
            raise ValueError(f"a ResShift schedule has 2..{MAX_STEPS} steps, got {self.steps!r}")
        for name in ("kappa", "eta_first", "eta_last", "power"):
            if not _number(getattr(self, name)):
                raise ValueError(f"ResShift {name} must be a finite number, got {getattr(self, name)!r}")
        if not 0 < self.eta_first < self.eta_last < 1:
            raise ValueError(f"ResShift needs 0 < eta_first < eta_last < 1, got {self.eta_first} and {self.eta_last}")
        if not 0 < self.kappa <= 100:
            raise ValueError(f"ResShift kappa must be in (0, 100], got {self.kappa}")
        if not 0 < self.power <= 100:
            raise ValueError(f"ResShift power must be in (0, 100], got {self.power}")

    def etas(self) -> Tensor:
        """eta_t for t = 0..T in float64 (eta_0 = 0: the clean image)."""
        total = self.steps
        exponent = torch.linspace(0, 1, total, dtype=torch.float64) ** self.power * (total - 1)
        base = math.exp(math.log(math.sqrt(self.eta_last / self.eta_first)) / (total - 1))
        sqrt_etas = math.sqrt(self.eta_first) * torch.pow(torch.tensor(base, dtype=torch.float64), exponent)
        return torch.cat([torch.zeros(1, dtype=torch.float64), sqrt_etas**2])

    def build(self) -> ResShiftSchedule:
        return ResShiftSchedule(etas=self.etas(), kappa=float(self.kappa), steps=torch.arange(self.steps + 1))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResShiftSpec:
        if not isinstance(data, dict):
            raise TypeError(f"a schedule is described by an object, got {type(data).__name__}")
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


@dataclass(frozen=True)
class ResShiftSchedule:
    """eta_t for every training step, kappa, and the steps a sampler visits (as ``NoiseSchedule``)."""

    etas: Tensor
    """float64, shape T + 1; etas[0] = 0."""
    kappa: float
    steps: Tensor
    """int64, ascending, starting with 0: the training steps visited (all of 0..T unless respaced)."""

    @property
    def train_steps(self) -> int:
        """T (masks are defined over 1..T, docs/method.md §5)."""
        return len(self.etas) - 1

    @property
    def num_steps(self) -> int:
        """How many network calls a sampler makes on this schedule."""
        return len(self.steps) - 1

    @property
    def step_etas(self) -> Tensor:
        """eta at the visited steps (float64, shape num_steps + 1; the first is eta_0 = 0)."""
        return self.etas[self.steps]

    def respace(self, num_steps: int) -> ResShiftSchedule:
        """Keep ``num_steps`` training steps as ResShift's authors do, eta unchanged at each.

        Upstream (``models/respace.py``) keeps the 0-based steps int(T / n * i) for i = 0..n-1, so the
        first step always stays and T does only for n = T: sampling starts at the highest kept step,
        from y0 plus that step's noise. In yoda-sr's 1-based numbering that is 1 + floor(T i / n),
        computed in integers. Upstream's float product keeps as many steps (22 of 22 at T = 30, n = 22)
        but, where it rounds down (30 / 22 * 11 = 14.999...), one a step earlier: 15 where this keeps 16.
        """
        total = self.train_steps
        if not 1 <= num_steps <= total:
            raise ValueError(f"cannot respace a {total}-step ResShift schedule to {num_steps} steps (use 1..{total})")
        kept = [0, *(1 + total * i // num_steps for i in range(num_steps))]
        return ResShiftSchedule(etas=self.etas, kappa=self.kappa, steps=torch.tensor(kept, dtype=torch.int64))


# --- the process as formulas ---------------------------------------------------------------------


def forward_marginal(x0: Tensor, y0: Tensor, eta: Tensor | float, kappa: float, noise: Tensor) -> Tensor:
    """x_t = x0 + eta (y0 - x0) + kappa sqrt(eta) eps (eta a number or broadcastable to x0)."""
    eta_t = torch.as_tensor(eta, dtype=x0.dtype, device=x0.device)
    return x0 + eta_t * (y0 - x0) + kappa * eta_t.sqrt() * noise


def posterior(eta: float, eta_prev: float, kappa: float) -> tuple[float, float, float]:
    """q(x_{t-1} | x_t, x0) between two visited steps: (coefficient of x_t, of x0, standard deviation)."""
    alpha = eta - eta_prev
    return eta_prev / eta, alpha / eta, kappa * math.sqrt(eta_prev * alpha / eta)


def input_scale(eta: Tensor | float, kappa: float) -> Tensor | float:
    """1 / sqrt(1 + kappa^2 eta): what the network input x_t is multiplied by (upstream's
    ``normalize_input``), keeping it near unit scale at every step."""
    if isinstance(eta, Tensor):
        return (1 + kappa**2 * eta).rsqrt()
    return 1 / math.sqrt(1 + kappa**2 * eta)


def noise_level(eta: Tensor | float) -> Tensor | float:
    """sqrt(1 - eta_t): the level a noise-level-conditioned network (SR3) is given, 1 when clean."""
    if isinstance(eta, Tensor):
        return (1 - eta).sqrt()
    return math.sqrt(1 - eta)


def masked_input(x: Tensor, y0: Tensor, active: Tensor) -> Tensor:
    """y0 + M (x_t - y0): the network input under YODA (eq. 11 with the known mean outside M)."""
    return y0 + (x - y0) * active


# --- the process the loop runs ------------------------------------------------------------------


@dataclass(frozen=True)
class EtaStep(Step):
    """Host-side constants of one ResShift step."""

    coef_x: float
    coef_x0: float
    sigma: float
    known_std: float
    scale: float


class ResShift(Process[EtaStep]):
    """ResShift's reverse chain (the posterior above), the network predicting x0 from the scaled input.

    YODA's network input is y0 + M (x_t - y0) (``masked_input``), and the known region's marginal at
    the next visited step is y0 + kappa sqrt(eta_{t-1}) eps'.
    """

    name = SAMPLER
    schedule: ResShiftSchedule

    def __init__(self, schedule: ResShiftSchedule) -> None:
        super().__init__(schedule)

    def plan(self) -> list[EtaStep]:
        etas, steps, kappa = self.schedule.step_etas.tolist(), self.schedule.steps.tolist(), self.schedule.kappa
        plan = []
        for k in range(self.schedule.num_steps, 0, -1):
            eta, eta_prev = etas[k], etas[k - 1]
            coef_x, coef_x0, sigma = posterior(eta, eta_prev, kappa)
            scale = float(input_scale(eta, kappa))
            plan.append(EtaStep(k, steps[k], coef_x, coef_x0, sigma, kappa * math.sqrt(eta_prev), scale))
        return plan

    def levels(self) -> Tensor:
        return (1 - self.schedule.step_etas).sqrt()  # noise_level

    def prior(self, known: Tensor, noise: NoiseSampler) -> Tensor:
        first_eta = float(self.schedule.step_etas[-1])
        return known + self.schedule.kappa * math.sqrt(first_eta) * noise(known)

    def network_input(self, step: EtaStep, z: Tensor, known: Tensor, active: Tensor | None) -> Tensor:
        return (z if active is None else masked_input(z, known, active)) * step.scale

    def x0(self, step: EtaStep, z: Tensor, output: Tensor) -> Tensor:
        return output.clamp(-1, 1)

    def posterior(self, step: EtaStep, z: Tensor, x0: Tensor, noise: NoiseSampler) -> Tensor:
        z_next = step.coef_x * z + step.coef_x0 * x0
        if step.sigma > 0:
            z_next = z_next + step.sigma * noise(z)
        return z_next

    def marginal(self, step: EtaStep, known: Tensor, noise: NoiseSampler) -> Tensor:
        return known + step.known_std * noise(known) if step.known_std > 0 else known
