"""YODA masked training (docs/method.md §6): the objective, and the `yoda-sr train` run around it.

- ``objective``: the masked L1 loss (eq. 10), the noise draws, ``diffusion_loss``.
- ``config``: ``TrainConfig`` and ``load_config`` (TOML file plus command-line overrides).
- ``data``: training images with cached attention maps; samples as a function of (seed, index).
- ``model``: the model to train, learning-rate schedule, EMA.
- ``distributed``: the process group under ``torchrun`` and the gradient all-reduce.
- ``run_folder``: state for ``--resume``, weights with metadata, metrics, plots, sample grids.
- ``trainer``: the ``Trainer`` loop.
"""

from __future__ import annotations

from .config import TrainConfig
from .objective import (
    NoisedBatch,
    NoiseDraw,
    Prediction,
    diffusion_loss,
    draw_noise,
    masked_l1,
    masked_l1_terms,
    noise_batch,
    predict,
)
from .resume import load_config
from .trainer import Trainer

__all__ = [
    "NoiseDraw",
    "NoisedBatch",
    "Prediction",
    "TrainConfig",
    "Trainer",
    "diffusion_loss",
    "draw_noise",
    "load_config",
    "masked_l1",
    "masked_l1_terms",
    "noise_batch",
    "predict",
]
