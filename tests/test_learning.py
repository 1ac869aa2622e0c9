"""End to end on a real photo: tiny SR3 and SRDiff models trained by `yoda-sr train`'s Trainer with
the YODA masked loss beat bicubic on held-out parts of the photo, with plain and with YODA sampling.

The photo (scikit-image's astronaut) is cut into 64 x 64 tiles; one tile in four, on a diagonal
pattern, is held out. The training folder holds each tile row's runs of training tiles as separate
images, so no training crop overlaps a held-out tile. Quality is PSNR over all held-out pixels of
the EMA weights the run leaves. Half of the training samples (``plain_fraction``) use A = 1 and the
rest the weight-free edge map, so one model serves both samplers in distribution (a model trained
only with masks never sees low-attention pixels at high t).

Recipes are what was measured to work in minutes on 2 CPU cores (numbers in the CHANGELOG):
- srdiff-tiny uses its registered cosine T = 100 schedule; diffusion training is noisy (random t
  and eps), and large batches of small crops learn far faster per second than small batches.
- sr3-tiny uses a short chain (20 steps, gamma_T ~ 0.85, in the spirit of ResShift): sampling starts
  from the forward marginal of x_up, which SR3 tolerates because it sees x_up beside z. On its
  registered T = 500 schedule a network this small needs far longer to get high noise levels (and
  colour) right. A residual-space model cannot take this shortcut: its known region is 0, so with
  gamma_T far from 0 the start state lacks the residual the model expects and noise is read as detail.
  The Trainer takes a model's schedule from its checkpoint, so the run starts from a checkpoint of
  the initial sr3-tiny weights that carries the short schedule (fine-tuning, as a user would).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from PIL import Image

from yoda_sr import checkpoints
from yoda_sr.attention import compute_attention
from yoda_sr.imaging import resize_bicubic, to_tensor
from yoda_sr.models import create_model
from yoda_sr.sampling import sample
from yoda_sr.schedules import ScheduleSpec
from yoda_sr.training import Trainer, diffusion_loss, load_config

from conftest import photo

SCALE = 4
TILE = 64
LOWER_BOUND = 0.3


def held_out(row: int, column: int) -> bool:
    return (row + column) % 4 == 0


def training_folder(folder: Path) -> Path:
    """The photo's training tiles, one image per run of consecutive training tiles in a tile row."""
    image = photo("astronaut")
    rows, columns = image.shape[0] // TILE, image.shape[1] // TILE
    folder.mkdir(parents=True, exist_ok=True)
    for row in range(rows):
        run: list[int] = []
        for column in [*range(columns), None]:
            if column is not None and not held_out(row, column):
                run.append(column)
                continue
            if run:
                strip = image[row * TILE : (row + 1) * TILE, run[0] * TILE : (run[-1] + 1) * TILE]
                Image.fromarray(strip).save(folder / f"row{row}_col{run[0]}.png")
            run = []
    return folder


def held_out_tiles() -> torch.Tensor:
    image = to_tensor(photo("astronaut"))
    rows, columns = image.shape[-2] // TILE, image.shape[-1] // TILE
    return torch.cat(
        [
            image[..., row * TILE : (row + 1) * TILE, column * TILE : (column + 1) * TILE]
            for row in range(rows)
            for column in range(columns)
            if held_out(row, column)
        ]
    )


def psnr(image: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR over all pixels of the batch, on 8-bit RGB."""
    a = ((image + 1) * 127.5).round().clamp(0, 255)
    b = ((reference + 1) * 127.5).round().clamp(0, 255)
    return float(10 * torch.log10(255**2 / ((a - b) ** 2).mean()))


@torch.no_grad()
def evaluate(model, schedule) -> dict[str, float]:
    """Held-out masked loss (fixed draws) and PSNR of plain and YODA samples (fixed seed), with the
    edge attention the run trained with."""
    hr = held_out_tiles()
    lr_image = resize_bicubic(hr, scale=1 / SCALE)
    x_up = resize_bicubic(lr_image, size=(TILE, TILE))
    attention = compute_attention(lr_image, "edge", hr_size=(TILE, TILE))
    model = model.eval()
    cond = model.prepare(lr_image, x_up)
    loss = diffusion_loss(
        model,
        hr,
        cond,
        schedule,
        attention=attention,
        lower_bound=LOWER_BOUND,
        generator=torch.Generator().manual_seed(3),
    )
    results = {"loss": float(loss), "bicubic": psnr(x_up, hr)}
    respaced = schedule.respace(20)
    for label, att in (("plain", None), ("yoda", attention)):
        out = sample(
            model,
            cond,
            respaced,
            sampler="ddpm",
            attention=att,
            lower_bound=LOWER_BOUND,
            generator=torch.Generator().manual_seed(1),
        )
        results[label] = psnr(out.image, hr)
        results[f"{label}_fraction"] = out.update_fraction
    return results


def sr3_short_chain(path: Path) -> str:
    """A checkpoint of freshly initialised sr3-tiny weights with a 20-step linear schedule."""
    torch.manual_seed(0)
    model = create_model("sr3-tiny")
    schedule = ScheduleSpec(kind="linear", steps=20, start=1e-3, end=0.015)
    metadata = {"kind": "denoiser", "arch": "sr3", "hparams": model.config, "scale": SCALE}
    metadata |= {"schedule": schedule.to_dict(), "sampling": {"steps": 20, "sampler": "ddpm"}}
    return str(checkpoints.save(path, model.state_dict(), metadata))


RECIPES = {
    "srdiff-tiny": dict(iterations=1200, batch_size=128, hr_size=16, lr=4e-3),
    "sr3-tiny": dict(iterations=900, batch_size=16, hr_size=32, lr=2e-3),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RECIPES))
def test_tiny_models_beat_bicubic_on_held_out_tiles(name, tmp_path, monkeypatch):
    monkeypatch.setenv("YODA_SR_HOME", str(tmp_path / "home"))
    recipe = RECIPES[name]
    settings = dict(
        data=str(training_folder(tmp_path / "tiles")),
        out=str(tmp_path / "run"),
        model=sr3_short_chain(tmp_path / "sr3-short.safetensors") if name == "sr3-tiny" else name,
        attention="edge",
        lower_bound=LOWER_BOUND,
        plain_fraction=0.5,
        warmup=recipe["iterations"] // 10,
        lr_schedule="cosine",
        weight_decay=0.0,
        clip_grad=0.0,
        val_every=recipe["iterations"],
        val_images=1,
        val_steps=2,
        **recipe,
    )
    trainer = Trainer(load_config(None, settings), log=lambda _: None)
    before = evaluate(copy.deepcopy(trainer.model), trainer.schedule)
    trainer.run()
    after = evaluate(trainer.ema, trainer.schedule)
    print(name, {"before": before, "after": after})
    assert after["loss"] < 0.7 * before["loss"], (before, after)
    assert after["plain"] > after["bicubic"], after
    assert after["yoda"] > after["bicubic"], after
    assert after["yoda_fraction"] < 0.9
