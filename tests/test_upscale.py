"""`yoda-sr upscale` end to end: mixed folders, resuming, seed invariance, tiling, errors.

The model is a tiny SRDiff with fixed random weights saved as a yoda-sr checkpoint: these tests
check the product path (files, modes, determinism, seams), not image quality.
"""

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

from yoda_sr.api import Settings, Upscaler

from conftest import cli, free_port, photo, save_tiny_checkpoint

STEPS = "4"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def run_subprocess(*args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "yoda_sr", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def crops(count: int, size=(24, 32)) -> list[np.ndarray]:
    image = photo("astronaut")
    return [np.ascontiguousarray(image[40 * i : 40 * i + size[0], 60 * i : 60 * i + size[1]]) for i in range(count)]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def test_mixed_folder_good_and_bad_images(tmp_path, model_file, capsys):
    src = tmp_path / "in"
    src.mkdir()
    rgb = crops(1)[0]
    Image.fromarray(rgb).save(src / "rgb.png")
    rgba = np.dstack([rgb, np.linspace(0, 255, rgb.shape[1], dtype=np.uint8)[None].repeat(rgb.shape[0], 0)])
    Image.fromarray(rgba, "RGBA").save(src / "rgba.png")
    Image.fromarray(rgb).convert("L").save(src / "grey.png")
    grey16 = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey16).save(src / "grey16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    Image.fromarray(rgb).save(src / "rotated.jpg", exif=exif.tobytes(), quality=95)
    Image.fromarray(rgb).save(src / "café 写真.png")
    whole = (src / "rgb.png").read_bytes()
    (src / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (src / "empty.png").write_bytes(b"")
    (src / "notimage.png").write_text("this is not an image\n")
    Image.new("RGB", (1, 1)).save(src / "tiny.png")
    huge = Image.new("L", (8, 8))
    huge.save(src / "huge.png")
    data = bytearray((src / "huge.png").read_bytes())  # claim 100000 x 100000 in the header
    import struct
    import zlib

    data[16:24] = struct.pack(">II", 100000, 100000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    (src / "huge.png").write_bytes(bytes(data))

    out = tmp_path / "out"
    code = cli("upscale", src, "-o", out, "--model", model_file, "--steps", STEPS, "-q")
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if line.startswith("yoda-sr: error:")]
    assert len(error_lines) == 5, err
    for bad in ("truncated.png", "empty.png", "notimage.png", "tiny.png", "huge.png"):
        assert sum(bad in line for line in error_lines) == 1, (bad, err)
    height, width = rgb.shape[:2]
    expected = {
        "rgb.png": ("RGB", (4 * width, 4 * height)),
        "rgba.png": ("RGBA", (4 * width, 4 * height)),
        "grey.png": ("L", (4 * width, 4 * height)),
        "grey16.png": ("I;16", (4 * width, 4 * height)),
        "rotated.jpg": ("RGB", (4 * height, 4 * width)),
        "café 写真.png": ("RGB", (4 * width, 4 * height)),
    }
    for name, (mode, size) in expected.items():
        with Image.open(out / name) as image:
            assert (image.mode, image.size) == (mode, size), name
    written = [p for p in out.iterdir() if p.name != "yoda-sr-upscale.jsonl"]
    assert sorted(p.name for p in written) == sorted(expected)
    assert all(p.stat().st_size > 0 for p in out.iterdir())
    # the photo was turned upright before upscaling: shrunk back, it matches the upright crop far
    # better than the crop turned the other way
    upright = np.asarray(Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_270), dtype=float)
    shrunk = pixels(out / "rotated.jpg").reshape(width, 4, height, 4, 3).mean(axis=(1, 3))
    assert np.abs(shrunk - upright).mean() < 0.5 * np.abs(shrunk - upright[::-1, ::-1]).mean()
    # 16-bit stays 16-bit and uses the range
    assert pixels(out / "grey16.png").dtype == np.uint16 or Image.open(out / "grey16.png").mode == "I;16"
    log = [json.loads(line) for line in (out / "yoda-sr-upscale.jsonl").read_text().splitlines()]
    assert len(log) == 6 and {"model_sha256", "seed", "steps", "update_fraction", "seconds"} <= set(log[0])


def make_folder(folder: Path, count: int, size=(24, 32)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, crop in enumerate(crops(count, size)):
        paths.append(folder / f"img{index}.png")
        Image.fromarray(crop).save(paths[-1])
    return paths


def test_same_image_same_output_alone_in_batches_and_under_torchrun(tmp_path, model_file):
    folder = tmp_path / "in"
    images = make_folder(folder, 4)
    alone = tmp_path / "alone"
    assert cli("upscale", images[2], "-o", alone / "img2.png", "--model", model_file, "--steps", STEPS, "-q") == 0
    reference = pixels(alone / "img2.png")
    for batch in ("1", "4"):
        out = tmp_path / f"batch{batch}"
        assert cli("upscale", folder, "-o", out, "--model", model_file, "--steps", STEPS, "-b", batch, "-q") == 0
        assert np.array_equal(pixels(out / "img2.png"), reference), batch
    out = tmp_path / "torchrun"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            str(free_port()),
            "-m",
            "yoda_sr",
            "upscale",
            str(folder),
            "-o",
            str(out),
            "--model",
            str(model_file),
            "--steps",
            STEPS,
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert np.array_equal(pixels(out / "img2.png"), reference)
    assert len(list(out.glob("img*.png"))) == 4
    assert len((out / "yoda-sr-upscale.jsonl").read_text().splitlines()) == 4


def test_killed_batch_resumes_to_the_same_outputs(tmp_path, model_file):
    folder = tmp_path / "in"
    make_folder(folder, 6, size=(48, 64))
    reference = tmp_path / "reference"
    assert cli("upscale", folder, "-o", reference, "--model", model_file, "--steps", STEPS, "-q") == 0
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "yoda_sr",
        "upscale",
        str(folder),
        "-o",
        str(out),
        "--model",
        str(model_file),
        "--steps",
        STEPS,
        "-q",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(out.glob("img*.png"))) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = sorted(p.name for p in out.glob("img*.png"))
    assert 2 <= len(finished) < 6, finished
    hidden = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert all(name.endswith((".yoda-claim", ".yoda-tmp")) for name in hidden), hidden  # only our own
    result = run_subprocess("upscale", folder, "-o", out, "--model", model_file, "--steps", STEPS)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("skipped") == len(finished)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # the rerun cleared what the kill left
    for path in reference.glob("img*.png"):
        assert np.array_equal(pixels(out / path.name), pixels(path)), path.name


def test_tiled_run_has_no_seam_and_matches_untiled(model_file):
    upscaler = Upscaler.from_pretrained(model_file, device="cpu")
    image = np.ascontiguousarray(photo("chelsea")[60:156, 120:248])  # 96 x 128 -> 384 x 512
    untiled = upscaler.upscale(image, seed=3, settings=Settings(steps=4, tile=0)).image.astype(np.float64)
    tiled_result = upscaler.upscale(image, seed=3, settings=Settings(steps=4, tile=128, tile_overlap=32))
    assert tiled_result.tile == 128
    tiled = tiled_result.image.astype(np.float64)
    difference = np.abs(tiled - untiled)
    assert difference.mean() < 0.1 and np.percentile(difference, 99.9) <= 2

    from yoda_sr.runtime.tiling import plan_tiles

    tiles = plan_tiles(384, 512, 128, 32, 4)
    borders_x = sorted({t.left for t in tiles if t.left} | {t.left + t.width for t in tiles if t.left + t.width < 512})
    gradient = np.abs(np.diff(tiled.mean(axis=2), axis=1))  # horizontal gradient between columns c, c+1
    at_borders = np.concatenate([gradient[:, c - 1] for c in borders_x])
    elsewhere = np.delete(gradient, [c - 1 for c in borders_x], axis=1).ravel()
    assert at_borders.mean() < 1.25 * elsewhere.mean()
    assert np.percentile(at_borders, 99) < 1.25 * np.percentile(elsewhere, 99)


def test_scale_choices_and_usage_errors(tmp_path, model_file, capsys):
    image = make_folder(tmp_path / "in", 1)[0]
    assert (
        cli(
            "upscale", image, "-o", tmp_path / "half.png", "--model", model_file, "--scale", "2", "--steps", STEPS, "-q"
        )
        == 0
    )
    with Image.open(tmp_path / "half.png") as result:
        assert result.size == (64, 48)
    capsys.readouterr()
    assert cli("upscale", image, "--model", model_file, "--scale", "8") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "srdiff-celeba-8x" in err
    assert cli("upscale", image, "--model", model_file, "--dtype", "fp16", "--device", "cpu") == 2
    assert cli("upscale", image, "--model", model_file, "--device", "cuda:7") == 2
    assert cli("upscale", image, "--model", tmp_path / "missing.safetensors") == 2
    capsys.readouterr()
    assert cli("upscale", image, "-o", image.parent, "--suffix", "", "--model", model_file, "--steps", STEPS) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert image.stat().st_size > 0


def test_json_output_and_defaults_beside_the_input(tmp_path, model_file, capsys):
    image = make_folder(tmp_path / "in", 1)[0]
    assert cli("upscale", image, "--model", model_file, "--steps", STEPS, "--json", "--save-attention") == 0
    record = json.loads(capsys.readouterr().out.strip())
    output = image.with_name("img0_x4.png")
    assert record["output"] == str(output) and output.exists()
    assert output.with_name("img0_x4.attention.png").exists()
    assert record["attention"] == "edge" and 0 < record["update_fraction"] < 1
    # a second run skips, and does not pick up its own output as an input
    assert cli("upscale", image.parent, "--model", model_file, "--steps", STEPS, "--json") == 0
    assert capsys.readouterr().out == ""


def test_a_rerun_decides_its_skips_before_loading_the_model(tmp_path, model_file, capsys):
    """`yoda-sr upscale face.png --scale 4` again, its output there: one skip line, no model loaded
    (no banner, torch never imported); with one image left to do, the skip comes first, then the
    model's banner and the new output."""
    Image.fromarray(crops(1)[0]).save(tmp_path / "face.png")
    (tmp_path / "face_x4.png").write_bytes(b"an earlier run's output")
    probe = "import sys; from yoda_sr.cli import main\ntry:\n    main()\nfinally:\n    print('torch' in sys.modules)"
    for extra in ([], ["--model", model_file]):  # the embedded default, as in the README; a file's scale
        scale = ["--scale", "4"] if not extra else []
        rerun = subprocess.run(
            [sys.executable, "-c", probe, "upscale", "face.png", *scale, *extra],
            capture_output=True, text=True, timeout=120, cwd=tmp_path, env={**os.environ}, check=False,
        )  # fmt: skip
        assert rerun.returncode == 0, rerun.stderr
        assert rerun.stderr.splitlines() == ["yoda-sr: skipped face.png: face_x4.png exists (use --overwrite)"]
        assert rerun.stdout.splitlines() == ["False"]  # torch was never imported: no model was loaded
    assert (tmp_path / "face_x4.png").read_bytes() == b"an earlier run's output"

    Image.fromarray(crops(2)[1]).save(tmp_path / "new.png")
    capsys.readouterr()
    assert cli("upscale", tmp_path / "face.png", tmp_path / "new.png", "--model", model_file, "--steps", STEPS) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines[0].startswith("yoda-sr: skipped") and lines[1].startswith("yoda-sr: tiny on cpu"), lines
    assert len(lines) == 2 and captured.out.startswith(f"{tmp_path / 'new.png'} -> {tmp_path / 'new_x4.png'}")
