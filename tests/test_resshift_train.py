"""`yoda-sr train --process resshift` keeps train's guarantees (exact resume, torchrun gradients, EMA
and run folder), records the process in the weights' metadata, and `upscale`/`evaluate` read it."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from yoda_sr import checkpoints
from yoda_sr.api import Settings, Upscaler
from yoda_sr.diffusion.resshift import ResShiftSchedule, ResShiftSpec
from yoda_sr.image.imaging import resize_bicubic
from yoda_sr.training import Trainer, data, diffusion_loss, load_config

from conftest import cli, free_port, photo

BASE = ["--model", "srdiff-tiny", "--process", "resshift", "--kappa", "1.5", "--hr-size", "32", "--lr", "2e-3",
        "--warmup", "5", "--attention", "edge"]  # fmt: skip


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee"):
        Image.fromarray(photo(name)).save(folder / f"{name}.png")
    return folder


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("YODA_SR_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def run(photos, tmp_path_factory) -> Path:
    """A 40-step ResShift run (weights, state, metrics) of a tiny SRDiff."""
    out = tmp_path_factory.mktemp("runs") / "run"
    args = ["--iterations", "40", "--batch-size", "4", "--val-every", "20", "--val-images", "1"]
    assert cli("train", "--data", photos, "--out", out, *BASE, *args) == 0
    return out


def test_the_run_records_the_process_and_its_chain(run):
    metadata = checkpoints.read_metadata(run / "weights" / "ema.safetensors")
    assert metadata["process"] == "resshift"
    assert metadata["schedule"] == ResShiftSpec(steps=15, kappa=1.5).to_dict()
    assert metadata["sampling"] == {"steps": 15, "sampler": "resshift"}
    assert metadata["weights"] == "ema" and metadata["training"]["iterations"] == 40
    for name in ("config.toml", "metrics.csv", "loss.png", "psnr.png", "state/last.pt", "samples/step_000040.png"):
        assert (run / name).is_file(), name
    assert 'process = "resshift"' in (run / "config.toml").read_text()
    ema, raw = (
        load_file(str(run / "weights" / "ema.safetensors")),
        load_file(str(run / "weights" / "model.safetensors")),
    )
    assert any(not torch.equal(ema[key], raw[key]) for key in ema)  # the EMA is its own average


def test_upscale_reads_the_process_and_steps_respace_the_chain(run, tmp_path, capsys):
    upscaler = Upscaler.from_pretrained(run, device="cpu", dtype="fp32")
    assert upscaler.process == "resshift" and isinstance(upscaler.schedule_spec.build(), ResShiftSchedule)
    image = photo("rocket")[100:132, 200:248]
    calls: list[int] = []
    for steps in (4, 15):
        result = upscaler.upscale(image, seed=3, settings=Settings(steps=steps, attention="none"),
                                  progress=lambda done, total: calls.append(total))  # fmt: skip
        assert result.sampler == "resshift" and result.steps == steps and calls[-1] == steps
        assert result.image.shape == (128, 192, 3)
    with pytest.raises(ValueError, match="resshift"):
        upscaler.resolve(Settings(sampler="ddim"))

    lr = tmp_path / "lr.png"
    Image.fromarray(image).save(lr)
    assert cli("upscale", lr, "--model", run, "-o", tmp_path / "sr.png", "--steps", "4", "--json", "-q") == 0
    record = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert record["sampler"] == "resshift" and record["steps"] == 4 and record["update_fraction"] < 1
    assert cli("upscale", lr, "--model", run, "-o", tmp_path / "x.png", "--sampler", "ddpm") == 2
    err = capsys.readouterr().err
    assert err.count("yoda-sr: error:") == 1 and "--sampler" in err and "resshift" in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_evaluate_reads_the_process(run, tmp_path, capsys):
    data = tmp_path / "hr"
    data.mkdir()
    Image.fromarray(photo("coffee")[:96, :128]).save(data / "coffee.png")
    out = tmp_path / "eval"
    assert cli("evaluate", "--model", run, "--data", data, "--steps", "4", "--out", out, "-q") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["sampler"] == "resshift" and summary["settings"]["steps"] == 4
    assert list(summary["methods"]) == ["bicubic", "base", "plain", "yoda"]  # base: the chain's start y0


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(photos, tmp_path):
    settings = dict(
        data=str(photos), model="srdiff-tiny", process="resshift", hr_size=32, batch_size=3, iterations=6,
        plain_fraction=0.5, val_every=3, val_images=1, val_steps=2, lr=2e-3, warmup=2,
    )  # fmt: skip
    whole = Trainer(load_config(None, {**settings, "out": str(tmp_path / "whole")}), log=lambda _: None)
    whole.run()
    first = Trainer(
        load_config(None, {**settings, "iterations": 3, "out": str(tmp_path / "parts")}), log=lambda _: None
    )
    first.run()
    resumed = load_config(None, {"out": str(tmp_path / "parts"), "resume": True, "iterations": 6})
    assert resumed.process == "resshift"
    second = Trainer(resumed, log=lambda _: None)
    second.run()
    for ours, theirs in ((second.model, whole.model), (second.ema, whole.ema)):
        for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
            assert torch.equal(a, b), name


def test_resume_refuses_another_chain_and_fine_tuning_keeps_the_process(run, photos, tmp_path, capsys):
    assert cli("train", "--out", run, "--resume", "--kappa", "2") == 2
    err = capsys.readouterr().err
    assert "kappa" in err and err.count("yoda-sr: error:") == 1
    out = tmp_path / "ft"
    args = ["--data", photos, "--out", out, "--iterations", "1", "--batch-size", "2", "--hr-size", "32"]
    assert cli("train", *args, "--model", run) == 2  # --process ddpm (the default) on a ResShift model
    assert "--process resshift" in capsys.readouterr().err
    assert cli("train", *args, "--model", run, "--process", "resshift", "--kappa", "1.5") == 0
    assert checkpoints.read_metadata(out / "weights" / "ema.safetensors")["process"] == "resshift"


@pytest.mark.parametrize(
    ("flag", "value"), [("--process", "ddim"), ("--kappa", "0"), ("--kappa", "nan"), ("--kappa", "-1")]
)
def test_bad_process_settings_are_one_line(photos, tmp_path, flag, value, capsys):
    assert cli("train", "--data", photos, "--out", tmp_path / "r", "--model", "srdiff-tiny", flag, value) == 2
    err = capsys.readouterr().err
    assert err.count("yoda-sr: error:") == 1 and flag.removeprefix("--") in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_torchrun_first_step_gradient_equals_single_process_with_doubled_batch(photos, tmp_path, monkeypatch):
    single = tmp_path / "single.safetensors"
    train = ["train", "--data", str(photos), *BASE, "--iterations", "1"]
    monkeypatch.setenv("YODA_SR_DUMP_GRADIENTS", str(single))
    assert cli(*train, "--out", tmp_path / "a", "--batch-size", "6") == 0  # one process: this one
    doubled = tmp_path / "ddp.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "YODA_SR_DUMP_GRADIENTS": str(doubled)}
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(free_port()),
    ]
    result = subprocess.run(
        [*torchrun, "-m", "yoda_sr", *train, "--out", str(tmp_path / "b"), "--batch-size", "3"],
        capture_output=True, text=True, timeout=600, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    ours, theirs = load_file(str(doubled)), load_file(str(single))
    assert ours.keys() == theirs.keys() and len(ours) > 10
    assert max(float((ours[k] - theirs[k]).abs().max()) for k in ours) <= 1e-5
    assert any(float(v.abs().max()) > 1e-4 for v in ours.values())


def test_the_trainer_lowers_the_x0_loss(photos, tmp_path):
    """What the trainer optimises for ResShift is ``diffusion_loss`` on x0: it falls on a fixed batch."""
    settings = dict(
        data=str(photos), model="srdiff-tiny", process="resshift", hr_size=32, batch_size=4, iterations=30,
        attention="none", val_images=1, val_steps=2, lr=3e-3, warmup=1, out=str(tmp_path / "r"),
    )  # fmt: skip
    trainer = Trainer(load_config(None, settings), log=lambda _: None)
    initial = copy.deepcopy(trainer.model)
    trainer.run()
    batch = next(data.batches(trainer.sources, trainer.config, trainer.scale, first_step=0, rank=0, world=1))
    x_up = resize_bicubic(batch["lr"], size=tuple(batch["hr"].shape[-2:]))

    def loss(model: torch.nn.Module) -> float:
        generator = [torch.Generator().manual_seed(i) for i in range(batch["hr"].shape[0])]
        with torch.no_grad():
            cond = model.prepare(batch["lr"], x_up)
            return float(diffusion_loss(model, batch["hr"], cond, trainer.schedule, generator=generator))

    assert loss(trainer.model) < 0.8 * loss(initial)
