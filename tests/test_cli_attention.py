"""`yoda-sr attention` on a real photo: maps, timelines, .npy, folders, errors."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yoda_sr.attention import METHODS
from yoda_sr.attention.render import heatmap
from yoda_sr.cli import main

from conftest import photo

HEIGHT, WIDTH = 192, 256


def run_cli(*args, cwd: Path, env: dict[str, str] | None = None, code: str | None = None):
    """Run `yoda-sr` in a fresh interpreter, as a user would."""
    command = [
        sys.executable,
        "-c",
        code or "from yoda_sr.cli import main; main()",
        *map(str, args),
    ]
    environment = {**os.environ, "YODA_SR_HOME": str(cwd / "empty-home"), **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd, env=environment, check=False)


def run_in_process(capsys, *args) -> tuple[int, str, str]:
    """Run `yoda-sr` in this process (for quick checks of argument errors)."""
    try:
        main([*map(str, args)])
        code = 0
    except SystemExit as stopped:
        code = stopped.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def astronaut(tmp_path: Path) -> Path:
    """A non-square crop (192 x 256) of scikit-image's astronaut, saved as PNG."""
    path = tmp_path / "astronaut.png"
    Image.fromarray(photo("astronaut")[40 : 40 + HEIGHT, 120 : 120 + WIDTH]).save(path)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("yoda-sr: error: ") and "Traceback" not in stderr
    return lines[0]


def test_attention_help_lists_methods_without_importing_torch(tmp_path):
    code = "import sys; from yoda_sr.cli import main\ntry:\n    main()\nfinally:\n    print('torch' in sys.modules)"
    result = run_cli("attention", "--help", cwd=tmp_path, code=code)
    assert result.returncode == 0
    assert result.stdout.splitlines()[-1] == "False"
    help_text = " ".join(result.stdout.split())
    for method in METHODS:
        assert method in help_text
    for option in ("--out", "--method", "--heads", "--timeline", "--lower-bound", "--npy"):
        assert option in help_text


def test_help_names_the_files_it_writes(astronaut):
    """Every default output name is in --help as a pattern (<stem>, <method>) that matches it."""
    import re

    result = run_cli("attention", "--help", cwd=astronaut.parent)
    assert result.returncode == 0
    patterns = set(re.findall(r"<stem>[\w.<>]*\w", result.stdout))
    written = run_cli(
        "attention", astronaut.name, "--method", "edge", "--timeline", "2", "--npy", cwd=astronaut.parent
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    names = sorted(path.name for path in astronaut.parent.iterdir() if path.is_file() and path != astronaut)
    assert names == ["astronaut.edge.attention.npy", "astronaut.edge.attention.png", "astronaut.edge.timeline.png"]
    named = {pattern.replace("<stem>", "astronaut").replace("<method>", "edge") for pattern in patterns}
    assert set(names) <= named, (names, patterns)


def test_edge_map_is_a_png_of_the_image_size(astronaut):
    before = digest(astronaut)
    result = run_cli(
        "attention", astronaut.name, "--method", "edge", "--scale", "1", "--out", "map.png", cwd=astronaut.parent
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    with Image.open(astronaut.parent / "map.png") as heat:
        assert heat.format == "PNG" and heat.mode == "RGB" and heat.size == (WIDTH, HEIGHT)
        colours = np.asarray(heat)
    assert len(np.unique(colours.reshape(-1, 3), axis=0)) > 20
    [line] = result.stdout.splitlines()
    assert line.startswith("astronaut.png: edge") and f"{WIDTH}x{HEIGHT}" in line
    assert "pixel-update fraction" in line and "map.png" in line
    assert digest(astronaut) == before
    assert sorted(path.name for path in astronaut.parent.iterdir()) == [
        "astronaut.png",
        "map.png",
    ]


def test_timeline_npy_and_scale_with_default_names(astronaut):
    folder = astronaut.parent
    result = run_cli(
        "attention", astronaut.name, "--method", "edge", "--timeline", "8", "--npy",
        "--lower-bound", "0.2", "--steps", "500", "--scale", "1", "--flat-floor", "0", cwd=folder,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    attention = np.load(folder / "astronaut.edge.attention.npy")
    assert attention.dtype == np.float32 and attention.shape == (HEIGHT, WIDTH)
    assert 0.0 <= attention.min() < 0.1 and 0.9 < attention.max() <= 1.0
    with Image.open(folder / "astronaut.edge.attention.png") as heat:
        np.testing.assert_array_equal(np.asarray(heat), heatmap(attention))
    with Image.open(folder / "astronaut.edge.timeline.png") as strip:
        assert strip.mode == "RGB" and strip.size[0] > 1000 and 300 < strip.size[1] < 900
    fraction = float(np.minimum(1.0, attention.astype(np.float64) + 0.2).mean())
    assert f"pixel-update fraction {fraction:.3f}" in result.stdout

    scaled = run_cli(
        "attention", astronaut.name, "--method", "gaussian", "--overlay", "--scale", "0.5",
        "--out", "overlay.png", cwd=folder,
    )  # fmt: skip
    assert scaled.returncode == 0, scaled.stderr
    with Image.open(folder / "overlay.png") as blended:
        assert blended.size == (WIDTH // 2, HEIGHT // 2) and blended.mode == "RGB"
    assert f"{WIDTH // 2}x{HEIGHT // 2}" in scaled.stdout


def test_dino_without_weights_fails_in_one_line(astronaut):
    empty_home = astronaut.parent / "home"
    empty_home.mkdir()
    result = run_cli(
        "attention", astronaut.name, "--method", "dino-resnet50", cwd=astronaut.parent,
        env={"YODA_SR_HOME": str(empty_home)},
    )  # fmt: skip
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "weights" in line and "dino-resnet50" in line and "--method" in line and "--weights FILE" in line
    assert [line.count(method) for method in ("edge", "sift", "gaussian")] == [1, 1, 1], line  # named once
    assert sorted(path.name for path in astronaut.parent.iterdir()) == ["astronaut.png", "home"]


def test_folder_input_skips_non_images_and_keeps_going_past_failures(astronaut):
    folder = astronaut.parent / "photos"
    (folder / "sub").mkdir(parents=True)
    astronaut.rename(folder / "one.png")
    Image.open(folder / "one.png").convert("L").save(folder / "TWO.JPG", quality=95)
    Image.open(folder / "one.png").save(folder / "sub" / "three.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    inputs = {path: digest(path) for path in folder.rglob("*") if path.is_file()}

    result = run_cli(
        "attention", "photos", "--method", "gaussian", "--scale", "1", "--out", "maps", cwd=astronaut.parent
    )
    assert result.returncode == 1
    error_lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(error_lines) == 1 and "broken.png" in error_lines[0]
    assert "Traceback" not in result.stderr
    assert "notes.txt" in result.stderr and "--recursive" in result.stderr
    maps = astronaut.parent / "maps"
    assert sorted(path.name for path in maps.iterdir()) == [
        "TWO.gaussian.attention.png",
        "one.gaussian.attention.png",
    ]
    with Image.open(maps / "TWO.gaussian.attention.png") as heat:
        assert heat.size == (WIDTH, HEIGHT) and heat.mode == "RGB"
    assert len(result.stdout.splitlines()) == 2

    again = run_cli(
        "attention", "photos", "--method", "gaussian", "--scale", "1", "--out", "maps", "--recursive", "--quiet",
        cwd=astronaut.parent,
    )  # fmt: skip
    assert again.returncode == 1 and again.stdout == ""
    assert (maps / "sub" / "three.gaussian.attention.png").is_file()
    assert not list(maps.rglob("broken*")) and not list(maps.rglob(".*"))
    assert {path: digest(path) for path in folder.rglob("*") if path.is_file()} == inputs


def test_existing_output_is_skipped_unless_overwrite_and_input_never_overwritten(astronaut, capsys, monkeypatch):
    folder = astronaut.parent
    monkeypatch.chdir(folder)
    Image.new("RGB", (4, 4), (255, 0, 0)).save(folder / "map.png")
    before = digest(folder / "map.png")
    arguments = ["attention", astronaut.name, "--method", "gaussian", "--scale", "1", "--out", "map.png"]
    code, out, err = run_in_process(capsys, *arguments)
    assert code == 0 and out == ""
    assert "skipped" in err and "--overwrite" in err
    assert digest(folder / "map.png") == before

    code, out, err = run_in_process(capsys, *arguments, "--overwrite")
    assert code == 0 and err == "" and out.startswith("astronaut.png: gaussian")
    with Image.open(folder / "map.png") as heat:
        assert heat.size == (WIDTH, HEIGHT)

    original = digest(astronaut)
    for extra in ([], ["--overwrite"]):
        code, out, err = run_in_process(
            capsys, "attention", astronaut.name, "--method", "gaussian", "--out", astronaut.name,
            *extra,
        )  # fmt: skip
        assert code == 1 and out == ""
        assert "input" in one_error_line(err)
    assert digest(astronaut) == original
    assert sorted(path.name for path in folder.iterdir()) == ["astronaut.png", "map.png"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--method", "dino-vitb99"], "--method"),
        (["--heads", "6"], "--heads"),
        (["--heads", "median"], "--heads"),
        (["--lower-bound", "1.5"], "--lower-bound"),
        (["--lower-bound", "-0.1"], "--lower-bound"),
        (["--timeline", "0"], "--timeline"),
        (["--steps", "0"], "--steps"),
        (["--scale", "0"], "--scale"),
        (["--out", "map.jpg"], "--out"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_usage_errors_exit_2_in_one_line(astronaut, capsys, arguments, message):
    code, out, err = run_in_process(capsys, "attention", astronaut, *arguments)
    assert code == 2 and out == ""
    assert message in one_error_line(err)


def test_out_file_with_several_inputs_is_a_usage_error(astronaut, capsys):
    code, _, err = run_in_process(
        capsys,
        "attention",
        astronaut,
        astronaut,
        "--method",
        "edge",
        "--out",
        astronaut.parent / "m.png",
    )
    assert code == 2 and "--out FILE" in one_error_line(err)
    code, _, err = run_in_process(
        capsys,
        "attention",
        astronaut.parent,
        "--method",
        "edge",
        "--out",
        astronaut.parent / "m.png",
    )
    assert code == 2 and "--out FILE" in one_error_line(err)


def test_missing_input_and_empty_folder_fail_in_one_line(tmp_path, capsys):
    code, _, err = run_in_process(capsys, "attention", tmp_path / "nope.png", "--method", "edge")
    assert code == 1 and "nope.png" in one_error_line(err)
    (tmp_path / "empty").mkdir()
    code, _, err = run_in_process(capsys, "attention", tmp_path / "empty", "--method", "edge")
    assert code == 1 and "no images" in one_error_line(err)


def test_defaults_are_what_upscale_would_use_and_names_carry_the_method(astronaut, capsys, monkeypatch):
    from yoda_sr.jobs.attention_files import model_attention

    monkeypatch.chdir(astronaut.parent)
    embedded = model_attention()
    code, out, err = run_in_process(capsys, "attention", astronaut.name)
    assert code == 0, err
    assert f"settings of {embedded.model}" in err and embedded.method in err
    primary = astronaut.parent / f"astronaut.{embedded.method}.attention.png"
    with Image.open(primary) as heat:
        assert heat.size == (WIDTH * embedded.scale, HEIGHT * embedded.scale)
    flat = f", flat areas below {embedded.flat_floor:g} kept" if embedded.flat_floor else ""
    assert f"(l = {embedded.lower_bound:g}{flat})" in out

    code, out, err = run_in_process(capsys, "attention", astronaut.name, "--method", "edge")
    assert code == 0 and "skipped" not in err  # another method's map does not count as done
    assert (astronaut.parent / "astronaut.edge.attention.png").is_file()


def test_colorbar_titles_the_heat_map_and_adds_a_colour_bar(astronaut, tmp_path, capsys):
    from yoda_sr.image.colormap import colormap
    from yoda_sr.image.grids import HEADER, layout

    plain, labelled = tmp_path / "plain.png", tmp_path / "labelled.png"
    for out, extra in ((plain, []), (labelled, ["--colorbar"])):
        code, _, err = run_in_process(
            capsys, "attention", astronaut, "--method", "edge", "--scale", "1", "--out", out, *extra
        )
        assert code == 0, err
    heat = np.asarray(Image.open(plain).convert("RGB"))
    picture = np.asarray(Image.open(labelled).convert("RGB"))
    plan = layout(1, 1, (HEIGHT, WIDTH), colorbar=True)
    assert heat.shape == (HEIGHT, WIDTH, 3) and picture.shape == (plan.height, plan.width, 3)
    top, left = plan.origin(0, 0)
    np.testing.assert_array_equal(picture[top : top + HEIGHT, left : left + WIDTH], heat)  # the map itself, unscaled
    assert (picture[:HEADER].min(axis=2) < 128).sum() > 10  # its title
    bar_left, bar_top, bar_width, bar_height = plan.bar
    middle = picture[bar_top + 2 : bar_top + bar_height - 2, bar_left + bar_width // 2].astype(int)
    assert np.abs(middle[0] - colormap()[-1]).max() <= 12 and np.abs(middle[-1] - colormap()[0]).max() <= 12
