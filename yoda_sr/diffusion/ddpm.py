"""Ancestral DDPM and DDIM on a gamma schedule, the network predicting epsilon (eqs. 12-13).

With gamma_t the cumulative product of the schedule's alphas, a visited step from gamma to
gamma_prev turns eps into x0 = (z - sqrt(1 - gamma) eps) / sqrt(gamma) and then takes

    DDPM   z' = coef_x0 x0 + coef_z z + sigma eps'        (the posterior q(z' | z, x0))
    DDIM   z' = sqrt(gamma_prev) x0 + sqrt(1 - gamma_prev - sigma^2) eps(x0) + sigma eps',
           sigma = eta sqrt((1 - gamma_prev) / (1 - gamma) (1 - gamma / gamma_prev))

The known region's marginal is sqrt(gamma_prev) x0_known + sqrt(1 - gamma_prev) eps'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from .process import NoiseSampler, Process, Step
from .schedules import NoiseSchedule


@dataclass(frozen=True)
class GammaStep(Step):
    """Host-side constants of one DDPM or DDIM step."""

    gamma: float
    gamma_prev: float
    coef_x0: float
    coef_z: float
    sigma: float


class DDPM(Process[GammaStep]):
    """Ancestral sampling of the posterior q(z_{t-1} | z_t, x0)."""

    name = "ddpm"
    schedule: NoiseSchedule

    def __init__(self, schedule: NoiseSchedule) -> None:
        super().__init__(schedule)

    def coefficients(self, gamma: float, gamma_prev: float) -> tuple[float, float, float]:
        """(coefficient of x0, of z, standard deviation) of a step from gamma to gamma_prev."""
        beta = 1 - gamma / gamma_prev
        return (
            math.sqrt(gamma_prev) * beta / (1 - gamma),
            math.sqrt(1 - beta) * (1 - gamma_prev) / (1 - gamma),
            math.sqrt(beta * (1 - gamma_prev) / (1 - gamma)),
        )

    def plan(self) -> list[GammaStep]:
        gammas, steps = self.schedule.step_gammas.tolist(), self.schedule.steps.tolist()
        plan = []
        for k in range(self.schedule.num_steps, 0, -1):
            gamma, gamma_prev = gammas[k], gammas[k - 1]
            plan.append(GammaStep(k, steps[k], gamma, gamma_prev, *self.coefficients(gamma, gamma_prev)))
        return plan

    def levels(self) -> Tensor:
        return self.schedule.step_gammas.sqrt()

    def prior(self, known: Tensor, noise: NoiseSampler) -> Tensor:
        gamma = float(self.schedule.step_gammas[-1])
        return math.sqrt(gamma) * known + math.sqrt(1 - gamma) * noise(known)

    def x0(self, step: GammaStep, z: Tensor, output: Tensor) -> Tensor:
        return ((z - math.sqrt(1 - step.gamma) * output) / math.sqrt(step.gamma)).clamp(-1, 1)

    def mean(self, step: GammaStep, z: Tensor, x0: Tensor) -> Tensor:
        """The next state before its noise."""
        return step.coef_x0 * x0 + step.coef_z * z

    def posterior(self, step: GammaStep, z: Tensor, x0: Tensor, noise: NoiseSampler) -> Tensor:
        z_next = self.mean(step, z, x0)
        if step.sigma > 0 and step.gamma_prev < 1:
            z_next = z_next + step.sigma * noise(z)
        return z_next

    def marginal(self, step: GammaStep, known: Tensor, noise: NoiseSampler) -> Tensor:
        return math.sqrt(step.gamma_prev) * known + math.sqrt(1 - step.gamma_prev) * noise(known)


class DDIM(DDPM):
    """DDIM (Song et al.): deterministic at eta = 0, DDPM-like noise at eta = 1."""

    name = "ddim"

    def __init__(self, schedule: NoiseSchedule, eta: float = 0.0) -> None:
        if not eta >= 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        super().__init__(schedule)
        self.eta = eta

    def coefficients(self, gamma: float, gamma_prev: float) -> tuple[float, float, float]:
        sigma = self.eta * math.sqrt((1 - gamma_prev) / (1 - gamma) * (1 - gamma / gamma_prev))
        # coef_z multiplies the eps re-derived from x0
        return math.sqrt(gamma_prev), math.sqrt(max(1 - gamma_prev - sigma**2, 0.0)), sigma

    def mean(self, step: GammaStep, z: Tensor, x0: Tensor) -> Tensor:
        eps = (z - math.sqrt(step.gamma) * x0) / math.sqrt(1 - step.gamma)
        return step.coef_x0 * x0 + step.coef_z * eps
