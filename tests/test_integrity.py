"""Integrity of upscale runs: concurrent runs split a folder, killed runs leave nothing behind that
the next run keeps, outputs stay inside -o, and bad output arguments fail before any image."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yoda_sr.fsutil import TEMP_MARK, claim, claim_path, release, remove_stale_temporaries
from yoda_sr.jobs.files import find_images

from conftest import cli, photo, save_tiny_checkpoint

STEPS = "2"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def write_crops(folder: Path, count: int, size=(24, 32)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    image = photo("astronaut")
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.fromarray(np.ascontiguousarray(image[30 * i : 30 * i + size[0], 50 * i : 50 * i + size[1]])).save(path)
        paths.append(path)
    return paths


def dead_pid() -> int:
    """A process id that no process has (a child that has exited and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_claims_are_exclusive_and_stale_ones_are_taken_over(tmp_path):
    target = tmp_path / "out.png"
    held = claim(target)
    assert held == claim_path(target) and held.exists()
    assert claim(target) is None  # this process is alive: its claim stands
    release(held)
    assert not held.exists()
    held.write_text(f"{os.uname().nodename} {dead_pid()}\n")
    assert claim(target) == held  # its owner is gone
    assert held.read_text().split()[1] == str(os.getpid())


def test_only_our_own_dead_temporaries_are_removed(tmp_path):
    stale = tmp_path / f".photo.png.{dead_pid()}-0123abcd{TEMP_MARK}"
    live = tmp_path / f".photo.png.{os.getpid()}-0123abcd{TEMP_MARK}"
    lookalike = tmp_path / ".photo.png.tmp"
    users = tmp_path / f"notes.{dead_pid()}-0123abcd{TEMP_MARK}"  # not hidden: not a name we write
    for path in (stale, live, lookalike, users):
        path.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, lookalike, users))


def test_a_killed_write_is_cleaned_up_by_the_next_run(tmp_path, model_file):
    inputs = write_crops(tmp_path / "in", 2)
    out = tmp_path / "out"
    out.mkdir()
    script = (
        "import sys, time\n"
        "from yoda_sr.fsutil import atomic_write\n"
        "atomic_write(sys.argv[1], lambda handle: (handle.write(b'half'), handle.flush(), time.sleep(120)))\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script, str(out / "img0.png")])
    deadline = time.time() + 60
    while not list(out.glob(f"*{TEMP_MARK}")) and time.time() < deadline:
        time.sleep(0.1)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    assert len(list(out.glob(f".*{TEMP_MARK}"))) == 1
    assert cli("upscale", tmp_path / "in", "-o", out, "--model", model_file, "--steps", STEPS) == 0
    assert sorted(p.name for p in out.iterdir()) == ["img0.png", "img1.png", "yoda-sr-upscale.jsonl"]
    assert len(inputs) == 2


def test_two_concurrent_runs_split_the_work(tmp_path, model_file):
    write_crops(tmp_path / "in", 6)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "yoda_sr", "upscale", str(tmp_path / "in"), "-o", str(out)]
    command += ["--model", str(model_file), "--steps", "3", "-q"]
    runs = [subprocess.Popen([*command, "--seed", str(seed)], stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    errors = [run.communicate(timeout=600)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], errors
    records = [json.loads(line) for line in (out / "yoda-sr-upscale.jsonl").read_text().splitlines()]
    assert sorted(record["output"] for record in records) == sorted(str(out / f"img{i}.png") for i in range(6))
    assert sorted(p.name for p in out.iterdir()) == [*(f"img{i}.png" for i in range(6)), "yoda-sr-upscale.jsonl"]


def test_outputs_under_the_input_tree_are_never_inputs(tmp_path, model_file):
    write_crops(tmp_path / "d", 1)
    out = tmp_path / "d" / "out"
    for _ in range(2):
        assert cli("upscale", tmp_path / "d", "-r", "-o", out, "--model", model_file, "--steps", STEPS) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["img0.png", "yoda-sr-upscale.jsonl"]


def test_a_rerun_beside_the_inputs_skips_its_own_outputs_and_run_log(tmp_path, model_file, capsys):
    write_crops(tmp_path / "d", 1)
    for _ in range(2):
        assert cli("upscale", tmp_path / "d", "--model", model_file, "--steps", STEPS) == 0
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["img0.png", "img0_x4.png", "yoda-sr-upscale.jsonl"]
    assert "not an image" not in capsys.readouterr().err


def test_symlink_loops_in_input_folders_are_listed_once(tmp_path):
    write_crops(tmp_path / "d" / "sub", 1)
    (tmp_path / "d" / "sub" / "loop").symlink_to(tmp_path / "d")
    found = find_images([tmp_path / "d"], recursive=True)
    assert [path.name for path, _ in found.images] == ["img0.png"]
    assert any("already listed" in note for note in found.notes)
    assert [path.name for path, _ in find_images([tmp_path / "d" / "sub"]).images] == ["img0.png"]


def test_a_file_link_that_loops_is_one_line_and_the_rest_goes_on(tmp_path, model_file, capsys):
    """A link to itself among images (and as an argument): resolving it raised RuntimeError."""
    write_crops(tmp_path / "d", 1)
    (tmp_path / "d" / "loop.png").symlink_to(tmp_path / "d" / "loop.png")
    for args in (["-o", tmp_path / "out"], []):
        capsys.readouterr()
        assert cli("upscale", tmp_path / "d", *args, "--model", model_file, "--steps", STEPS) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("yoda-sr: error:") == 1, err
        assert "loop.png: is a symbolic link that loops or points to nothing; fix or remove the link" in err
    assert (tmp_path / "out" / "img0.png").is_file() and (tmp_path / "d" / "img0_x4.png").is_file()
    assert cli("upscale", tmp_path / "d" / "loop.png", "--model", model_file) == 1
    assert "loop.png: is a symbolic link that loops" in capsys.readouterr().err


@pytest.mark.parametrize(
    "case", ["text file", "bmp name", "folder under a file", "read-only folder", "symlinked run log"]
)
def test_bad_outputs_fail_before_any_image_and_write_nothing(tmp_path, model_file, capsys, case):
    (source,) = write_crops(tmp_path / "in", 1)
    before = source.read_bytes()
    if case == "text file":
        out = tmp_path / "notes.txt"
        out.write_text("mine")
    elif case == "bmp name":
        out = tmp_path / "out.bmp"
    elif case == "folder under a file":
        (tmp_path / "plain").write_text("mine")
        out = tmp_path / "plain" / "sub"
    elif case == "read-only folder":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        out = tmp_path / "locked"
        out.mkdir()
        out.chmod(0o500)
    else:
        out = tmp_path / "logged"
        out.mkdir()
        victim = tmp_path / "victim.txt"
        victim.write_text("keep me\n")
        (out / "yoda-sr-upscale.jsonl").symlink_to(victim)
    code = cli("upscale", source, "-o", out, "--model", model_file, "--steps", STEPS)
    error = capsys.readouterr().err
    assert code == 2, error
    assert "Traceback" not in error and error.count("yoda-sr: error:") == 1, error
    assert source.read_bytes() == before
    if case == "text file":
        assert out.read_text() == "mine"
    elif case == "bmp name":
        assert not out.exists()
    elif case == "symlinked run log":
        assert victim.read_text() == "keep me\n"
        assert "symbolic link" in error


@pytest.mark.parametrize("suffix", ["/../../escaped", "a/b", "..", "x\\y"])
def test_a_suffix_cannot_leave_the_output_folder(tmp_path, model_file, capsys, suffix):
    write_crops(tmp_path / "in", 1)
    out = tmp_path / "deep" / "out"
    assert cli("upscale", tmp_path / "in", "-o", out, "--suffix", suffix, "--model", model_file) == 2
    assert "--suffix" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["img0.png"]


@pytest.mark.parametrize("rank,world", [("0", "0"), ("5", "2"), ("-1", "2")])
def test_impossible_torchrun_environments_are_usage_errors(tmp_path, model_file, monkeypatch, capsys, rank, world):
    write_crops(tmp_path / "in", 1)
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", world)
    assert cli("upscale", tmp_path / "in", "-o", tmp_path / "out", "--model", model_file) == 2
    err = capsys.readouterr().err
    assert "WORLD_SIZE" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_animated_images_say_that_only_the_first_frame_is_upscaled(tmp_path, model_file, capsys):
    frames = [Image.fromarray(photo("astronaut")[30 * i : 30 * i + 24, :32]) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    assert (
        cli("upscale", tmp_path / "anim.gif", "-o", tmp_path / "out.png", "--model", model_file, "--steps", STEPS) == 0
    )
    assert "3 frames; only the first is upscaled" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--stream", "sometimes"], ["--stream", "on", "--tile", "0"]])
def test_stream_choices_are_usage_errors(tmp_path, model_file, capsys, extra):
    write_crops(tmp_path / "in", 1)
    assert cli("upscale", tmp_path / "in", "-o", tmp_path / "out", "--model", model_file, *extra) == 2
    assert "--stream" in capsys.readouterr().err
