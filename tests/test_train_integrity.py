"""Training never keeps bad weights, validates its settings before running, and survives damage."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from yoda_sr.fsutil import TEMP_MARK

from conftest import cli, photo

BASE = ["--model", "srdiff-tiny", "--hr-size", "32", "--warmup", "0", "--attention", "none", "--batch-size", "2"]
BASE += ["--val-steps", "2", "--val-images", "1"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee"):
        Image.fromarray(photo(name)[:96, :96]).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def one_step_run(photos, tmp_path_factory) -> Path:
    """A run folder saved after one step (copied by the tests that damage or resume it)."""
    out = tmp_path_factory.mktemp("one-step") / "run"
    args = ["train", "--data", photos, "--out", out, *BASE, "--save-every", "1", "--val-every", "1"]
    assert cli(*args, "--iterations", "1") == 0
    return out


def resume_args(source: Path, target: Path, photos: Path) -> list[object]:
    """Copy a run folder to ``target``; the train arguments that resume the copy."""
    import shutil

    shutil.copytree(source, target)
    saving = ["--save-every", "1", "--val-every", "1", "--resume"]
    return ["train", "--data", photos, "--out", target, *BASE, *saving]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("YODA_SR_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def finite_files(out: Path) -> list[str]:
    """The weight and state files of a run whose every tensor is finite."""
    from safetensors.torch import load_file

    good = []
    for path in sorted((out / "weights").glob("*.safetensors")):
        if all(torch.isfinite(t).all() for t in load_file(str(path)).values() if t.is_floating_point()):
            good.append(path.name)
    return good


def test_a_diverging_run_never_writes_non_finite_weights(photos, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", photos, "--out", out, *BASE, "--save-every", "1", "--val-every", "1"]
    # a learning rate of 1 (the most validation allows) makes the model blow up within a few steps
    code = cli(*args, "--iterations", "6", "--lr", "1.0")
    err = capsys.readouterr().err
    assert code == 1 and "non-finite" in err and "Traceback" not in err, err
    assert finite_files(out) == ["ema.safetensors", "model.safetensors"]
    state = torch.load(out / "state" / "last.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_non_finite_weights_stop_the_step_before_any_save(photos, tmp_path):
    from yoda_sr.errors import YodaError
    from yoda_sr.training import Trainer, load_config

    config = load_config(
        None,
        {
            "data": str(photos),
            "out": str(tmp_path / "run"),
            "model": "srdiff-tiny",
            "hr_size": 32,
            "batch_size": 2,
            "warmup": 0,
            "attention": "none",
            "iterations": 2,
        },
    )
    trainer = Trainer(config)
    trainer.config.lr = math.inf  # what validation refuses, forced here to reach the guard
    with pytest.raises(YodaError, match="non-finite at step 1"):
        trainer.run()
    assert not (tmp_path / "run" / "state").exists() and not (tmp_path / "run" / "weights").exists()


@pytest.mark.parametrize(
    "extra,setting",
    [
        (["--lr", "inf"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--hr-size", "0"], "--hr-size"),
        (["--iterations", "0"], "--iterations"),
    ],
)
def test_bad_flags_are_one_line_before_anything_runs(photos, tmp_path, capsys, extra, setting):
    out = tmp_path / "run"
    assert cli("train", "--data", photos, "--out", out, *BASE, *extra) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and setting in err and "Traceback" not in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "line,setting",
    [
        ("clip_grad = nan", "clip_grad"),
        ("iterations = 1.5", "iterations"),
        ('batch_size = "4"', "batch_size"),
        ("seed = nan", "seed"),
        ("val_steps = 0", "val_steps"),
        ("val_images = 0", "val_images"),
        ("resume = 1", "resume"),
    ],
)
def test_bad_config_values_are_one_line_before_anything_runs(photos, tmp_path, capsys, line, setting):
    config = tmp_path / "recipe.toml"
    config.write_text(f'data = "{photos}"\nmodel = "srdiff-tiny"\nhr_size = 32\n{line}\n')
    out = tmp_path / "run"
    assert cli("train", "--config", config, "--out", out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and setting.replace("_", "-") in err and "Traceback" not in err, err
    assert f"({setting} in {config})" in err, err  # where the value came from
    assert not out.exists()
    # the same value given as a flag is the flag's problem alone
    if setting == "val_steps":
        assert cli("train", "--config", config, "--out", out, "--val-steps", "0") == 2
        assert "recipe.toml" not in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncated", "garbage", "keys missing"])
def test_resuming_from_a_damaged_state_is_one_line(photos, one_step_run, tmp_path, capsys, damage):
    out = tmp_path / "run"
    args = resume_args(one_step_run, out, photos)
    state = out / "state" / "last.pt"
    if damage == "truncated":
        state.write_bytes(state.read_bytes()[:1000])
    elif damage == "garbage":
        state.write_bytes(os.urandom(4096))
    else:
        payload = torch.load(state, weights_only=True)
        payload["model"] = dict(list(payload["model"].items())[1:])
        torch.save(payload, state)
    capsys.readouterr()
    assert cli(*args, "--iterations", "2") == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("yoda-sr: error:")]
    assert len(errors) == 1 and "last.pt" in errors[0] and "Traceback" not in err, err


def test_a_killed_save_leaves_nothing_the_next_run_keeps(photos, one_step_run, tmp_path):
    out = tmp_path / "run"
    args = resume_args(one_step_run, out, photos)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    stale = out / "weights" / f".ema.safetensors.{child.pid}-0123abcd{TEMP_MARK}"
    stale.write_bytes(b"half a file")
    assert cli(*args, "--iterations", "2") == 0
    assert not stale.exists()
    assert math.isfinite(float((out / "metrics.csv").read_text().splitlines()[-1].split(",")[1]))


def test_resume_reads_the_run_config_and_says_what_a_new_length_changes(one_step_run, tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(one_step_run, out)
    capsys.readouterr()
    assert cli("train", "--out", out, "--resume", "--iterations", "3", "--log-every", "1") == 0  # no --data
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert lines[0] == (
        f"yoda-sr: resuming {out} with iterations 3 (was 1); log_every 1 (was 0); validation stays every step, "
        "as recorded (val_every changes that)"
    )
    start = next(line for line in lines if line.startswith("yoda-sr: training "))
    assert f"srdiff-tiny (0.23M parameters, 4x) in {out}: 2 image(s)" in start and "steps 1 -> 3" in start
    assert "cpu" in start
    progress = [line for line in lines if line.startswith("yoda-sr: step ") and "/3" in line]
    assert [line.split()[2] for line in progress] == ["2/3", "3/3"], err
    for line in progress:
        assert re.fullmatch(r"yoda-sr: step \d/3 \(\d+%\): loss \d\.\d{4}, \d+\.\d\d it/s, ETA \d+s", line), line
    steps = [row.split(",")[0] for row in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == ["1", "2", "3"]
    recorded = (out / "config.toml").read_text()
    assert "iterations = 3" in recorded.splitlines() and not any(
        line.startswith("resume") for line in recorded.splitlines()
    )


def test_resume_keeps_the_recorded_validation_spacing(photos, tmp_path):
    from yoda_sr.training import load_config
    from yoda_sr.training.config import TrainConfig, to_toml

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.toml").write_text(to_toml(TrainConfig(data=str(photos), out=str(out), iterations=200)))
    notes: list[str] = []
    config = load_config(None, {"out": str(out), "resume": True, "iterations": 500}, log=notes.append)
    assert config.data == str(photos) and config.iterations == 500 and config.resume
    assert config.val_every == 20 and config.save_every == 0  # 200 // 10, not 500 // 10
    assert notes == [
        f"resuming {out} with iterations 500 (was 200); validation and checkpoints stay every 20 steps, as "
        "recorded (val_every changes that)"
    ]
    (out / "config.toml").write_text(to_toml(config))  # what the resumed run records: the spacing stays
    assert load_config(None, {"out": str(out), "resume": True, "iterations": 900}).val_every == 20
    explicit = load_config(None, {"out": str(out), "resume": True, "iterations": 900, "val_every": 50})
    assert explicit.val_every == 50


@pytest.mark.parametrize(
    "cosine,extra,flag",
    [
        (False, ["--lr", "0.001"], "--lr"),
        (False, ["--seed", "3"], "--seed"),
        (True, ["--iterations", "9"], "--iterations"),
    ],
)
def test_resume_refuses_settings_that_change_the_run(photos, tmp_path, capsys, cosine, extra, flag):
    from yoda_sr.training.config import TrainConfig, to_toml

    out = tmp_path / "run"
    out.mkdir()
    schedule = "cosine" if cosine else "constant"
    recorded = to_toml(TrainConfig(data=str(photos), out=str(out), iterations=5, lr_schedule=schedule))
    (out / "config.toml").write_text(recorded)
    assert cli("train", "--data", photos, "--out", out, "--resume", *extra) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"yoda-sr: error: {flag}: ") and "config.toml" in err, err
    assert "--init-from" in err and (out / "config.toml").read_text() == recorded
    assert sorted(path.name for path in out.iterdir()) == ["config.toml"]


def test_resume_of_a_folder_without_a_run_is_one_line(tmp_path, capsys):
    assert cli("train", "--out", tmp_path / "nothing", "--resume") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no config.toml" in err and "--data" in err, err
