"""The interface the reverse loop runs (``loop.reverse``): one process, e.g. DDPM, DDIM or ResShift.

A process is a schedule plus five formulas: the prior the chain starts from, what the network is
given at a step, how its output becomes an x0 estimate, the posterior step, and the known region's
marginal at the next visited step (what YODA puts outside M(t), eq. 13). Everything a step needs is
computed on the host by ``plan`` before the loop; the formulas run on tensors in the loop.

A new process is one module with a ``Process`` subclass and an entry in ``processes.PROCESSES``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from torch import Tensor

NoiseSampler = Callable[[Tensor], Tensor]
"""Returns standard normal noise with the shape, dtype and device of its argument."""


class Schedule(Protocol):
    """What the loop reads of a process's schedule (``NoiseSchedule``, ``ResShiftSchedule``)."""

    @property
    def steps(self) -> Tensor:
        """int64, ascending, starting with 0: the training steps visited."""

    @property
    def train_steps(self) -> int:
        """T: masks are defined over 1..T (docs/method.md §5)."""

    @property
    def num_steps(self) -> int:
        """How many network calls a sampler makes on this schedule."""


@dataclass(frozen=True)
class Step:
    """One step from visited index ``index`` to ``index - 1``; ``t`` is the state's training step."""

    index: int
    t: int


StepT = TypeVar("StepT", bound=Step)


class Process(ABC, Generic[StepT]):
    """A reverse diffusion process over one schedule (see the module's docstring)."""

    name: str
    """The sampler's name, as ``--sampler`` and a checkpoint's metadata say it."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule

    @abstractmethod
    def plan(self) -> Sequence[StepT]:
        """Host-side constants of every step, in the order the loop runs them (index T' down to 1)."""

    @abstractmethod
    def levels(self) -> Tensor:
        """The noise level the network is told at each visited index (float64, num_steps + 1)."""

    @abstractmethod
    def prior(self, known: Tensor, noise: NoiseSampler) -> Tensor:
        """The state the chain starts from, given x0 of the known region."""

    def network_input(self, step: StepT, z: Tensor, known: Tensor, active: Tensor | None) -> Tensor:
        """What the network sees: the state, masked to ``active`` when given (eq. 11)."""
        return z if active is None else z * active

    @abstractmethod
    def x0(self, step: StepT, z: Tensor, output: Tensor) -> Tensor:
        """The x0 estimate (clamped to [-1, 1]) from the state and the network's output."""

    @abstractmethod
    def posterior(self, step: StepT, z: Tensor, x0: Tensor, noise: NoiseSampler) -> Tensor:
        """The next state from the current one and the x0 estimate (eq. 12)."""

    @abstractmethod
    def marginal(self, step: StepT, known: Tensor, noise: NoiseSampler) -> Tensor:
        """The known region's forward marginal at the next visited step, with fresh noise (eq. 13)."""
