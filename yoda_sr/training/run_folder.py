"""The run folder of ``yoda-sr train``; every file in it is written whole (``fsutil``).

``config.toml`` (resolved settings), ``weights/{ema,model}.safetensors`` (full metadata;
``Upscaler.from_pretrained(RUN_DIR)`` loads the EMA weights), ``state/last.pt`` (optimizer, EMA and step, to
resume; read back with ``torch.load(weights_only=True)``), ``metrics.csv``, ``loss.png``,
``psnr.png`` and ``samples/step_NNNNNN.png`` grids (LR | bicubic | SR | HR | attention).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import checkpoints
from .._version import __version__
from ..attention.render import heatmap
from ..errors import SettingError, YodaError, setting
from ..fsutil import atomic_save, atomic_write_bytes, remove_stale_temporaries
from ..image.grids import labelled_grid
from ..image.imaging import to_array
from ..image.io import save_png
from ..image.plots import line_plot
from .config import TrainConfig, to_toml

GRID_LABELS = ("LR", "bicubic", "SR (EMA)", "HR", "attention")
"""Columns of the samples/step_*.png grids."""
METRICS = ["step", "loss", "lr", "seconds", "val_loss", "val_psnr", "val_ssim", "bicubic_psnr"]


@dataclass
class RunState:
    """How far the run is: the step reached and one metrics row per validation."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Checkpoint:
    """What ``state/last.pt`` holds besides the run state (state dicts)."""

    model: dict[str, Any]
    ema: dict[str, Any]
    optimizer: dict[str, Any]
    scaler: dict[str, Any]


class RunFolder:
    """The files of one run under ``out``."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)

    @property
    def state_path(self) -> Path:
        return self.out / "state" / "last.pt"

    @property
    def ema_weights(self) -> Path:
        return self.out / "weights" / "ema.safetensors"

    def claim(self, resume: bool) -> None:
        """Create the folder; refuse to start a fresh run over a saved one."""
        if self.out.exists() and not self.out.is_dir():
            raise SettingError("out", f"{self.out} is a file, not a run folder; choose another folder")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise SettingError("out", f"{self.out} cannot be created ({reason}); choose another folder") from None
        if not resume and self.state_path.exists():
            raise SettingError(
                "out",
                f"{self.out} already holds a run; pass {setting('resume')} to continue it or choose another folder",
            )

    def remove_stale_temporaries(self) -> list[Path]:
        """The temporary files a killed run left in this folder (``fsutil``'s, of dead processes)."""
        folders = [self.out, self.out / "weights", self.out / "state", self.out / "samples"]
        return [path for folder in folders for path in remove_stale_temporaries(folder)]

    def write_config(self, config: TrainConfig) -> None:
        atomic_write_bytes(self.out / "config.toml", to_toml(config).encode())

    # -- state --

    def save_state(self, state: RunState, checkpoint: Checkpoint) -> None:
        payload = {
            "step": state.step,
            "model": checkpoint.model,
            "ema": checkpoint.ema,
            "optimizer": checkpoint.optimizer,
            "history": json.dumps(state.history),
            "scaler": checkpoint.scaler,
        }
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(self.state_path, lambda temporary: torch.save(payload, temporary))

    def load_state(self, device: torch.device) -> tuple[RunState, Checkpoint]:
        if not self.state_path.is_file():
            raise SettingError("resume", f"{self.state_path} does not exist (no checkpoint in {self.out})")
        try:
            payload = torch.load(self.state_path, map_location=device, weights_only=True)
            state = RunState(step=int(payload["step"]), history=json.loads(payload["history"]))
            checkpoint = Checkpoint(
                dict(payload["model"]), dict(payload["ema"]), dict(payload["optimizer"]), payload.get("scaler") or {}
            )
        except Exception as error:  # torch.load raises many types for damaged files
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise YodaError(
                f"{self.state_path} is damaged ({type(error).__name__}: {reason[:200]}); "
                "start a new run in another folder, or restore the file"
            ) from None
        if state.step < 0 or not isinstance(state.history, list):
            raise YodaError(f"{self.state_path} is damaged (step {state.step}); start a new run in another folder")
        return state, checkpoint

    def write_weights(self, ema: dict[str, Tensor], model: dict[str, Tensor], metadata: dict[str, Any]) -> None:
        """The EMA and the raw weights, each a yoda-sr checkpoint with the run's metadata."""
        checkpoints.save(self.ema_weights, ema, {**metadata, "weights": "ema"})
        checkpoints.save(self.out / "weights" / "model.safetensors", model, {**metadata, "weights": "raw"})

    # -- records --

    def record(self, history: list[dict[str, float]]) -> None:
        """Rewrite metrics.csv, loss.png and psnr.png from the whole history."""

        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=METRICS, extrasaction="ignore", lineterminator="\r\n")
        writer.writeheader()
        for entry in history:
            writer.writerow({key: entry.get(key, "") for key in METRICS})
        atomic_write_bytes(self.out / "metrics.csv", text.getvalue().encode())

        def series(key: str) -> list[tuple[float, float]]:
            return [(row["step"], row[key]) for row in history if key in row]

        line_plot(
            {"train loss": series("loss"), "validation loss": series("val_loss")},
            self.out / "loss.png",
            "loss (masked L1)",
        )
        line_plot(
            {"validation PSNR-Y": series("val_psnr"), "bicubic": series("bicubic_psnr")},
            self.out / "psnr.png",
            "PSNR-Y (dB)",
        )

    def write_grid(self, step: int, lr: Tensor, x_up: Tensor, sr: Tensor, hr: Tensor, attention: Tensor) -> Path:
        """samples/step_NNNNNN.png: one row per image, LR (nearest) | bicubic | SR | HR | attention,
        under column labels, with a colour bar for the attention map."""

        lr_big = torch.nn.functional.interpolate(lr, size=hr.shape[-2:], mode="nearest")
        rows = []
        for i in range(hr.shape[0]):
            tiles = [to_array(images[i : i + 1]) for images in (lr_big, x_up, sr, hr)]
            tiles.append(heatmap(attention[i, 0].cpu().numpy()))
            rows.append(tiles)
        grid = labelled_grid(rows, GRID_LABELS, colorbar="A")
        (self.out / "samples").mkdir(parents=True, exist_ok=True)
        return save_png(grid, self.out / "samples" / f"step_{step:06d}.png")


def weights_metadata(
    config: TrainConfig, base: dict[str, Any], scale: int, step: int, world: int, device: torch.device, run: str
) -> dict[str, Any]:
    """The metadata of a run's weights: the model's ``base`` (arch, schedule, sampling, origin), YODA
    settings and how it was trained."""
    yoda = None
    if config.attention != "none":
        yoda = {"attention": config.attention, "lower_bound": config.lower_bound, "mask_input": True}
    return {
        "kind": "denoiser",
        **base,
        "scale": scale,
        "yoda": yoda,
        "training": {
            "iterations": step,
            "batch_size": config.batch_size * world * config.grad_accum,
            "hr_size": config.hr_size,
            "mode": config.mode,
            "lr": config.lr,
            "ema": config.ema,
            "seed": config.seed,
            "data": str(config.data),
            "lr_degradation": config.lr_degradation,
            "lr_clean": config.lr_clean,
            "world_size": world,
            "device": str(device),
        },
        "source": {"trained_by": f"yoda-sr {__version__}", "run": run},
    }
