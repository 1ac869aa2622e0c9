"""`yoda-sr web`: the form's parsing and messages, and a running server driven through gradio_client
(the API's output equals the CLI's, several images, bad uploads, paths, cancel, loopback, clean stop)."""

from __future__ import annotations

import json
import os
import struct
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yoda_sr.errors import SettingError, YodaError
from yoda_sr.image.io import read_picture, write_picture
from yoda_sr.web.jobs import Form, Tick, Upload, message
from yoda_sr.web.server import is_loopback, parse_size

from conftest import cli
from webserver import SAMPLE, crop, leftovers, pixels, raw_call, start

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
PAGE_DEFAULTS = ["yoda-srdiff-x4", 4, 5, "ddpm", 0, "sift", 0.3, 0.3, "auto", "on", "auto", "auto", 32, 0, "auto", ""]
"""The page's form as it opens (the default model's settings), in the order the /page event takes them."""


def test_form_parses_as_upscale_does():
    settings = Form(steps=7.0, sampler="auto", attention="edge", tile="256", block="0", sparse="off").settings()
    assert (settings.steps, settings.sampler, settings.attention, settings.tile) == (7, None, "edge", 256)
    assert (settings.block, settings.sparse, settings.tile_overlap) == (0, False, 32)
    assert Form().settings().steps is None and Form().settings().attention == "auto"
    assert Form().settings().photo_model is None and Form(photo_model=" off ").settings().photo_model == "off"
    with pytest.raises(SettingError) as error:
        Form(steps=2.5).settings()
    assert message(error.value) == "Steps (--steps): must be a whole number, got 2.5"
    with pytest.raises(SettingError) as error:
        Form(tile="huge").settings()
    assert message(error.value) == "Tile (--tile): must be auto, 0 (off) or a size in pixels, got 'huge'"


def test_messages_are_one_line_and_name_no_server_flag():
    bomb = YodaError("photo.png: is 9x9 = 81 pixels, more than the limit of 80; pass --max-pixels 81 to allow it")
    assert message(bomb).endswith("start `yoda-sr web` with --max-pixels 81 to allow it")
    assert message(RuntimeError("boom")) == "RuntimeError: boom"


def test_upload_names_lose_their_folders():
    assert Upload.of("/srv/tmp/abc/photo.png").name == "photo.png"
    assert Upload.of("/x/y", "C:\\Users\\me\\face.jpg").name == "face.jpg"
    assert Upload.of("/x/y", "../..").name == "image"


def test_progress_names_the_step_and_tile():
    assert Tick(0, 2, "a.png", 7, 20, 5).describe() == "a.png (1/2): step 2/5, tile 4/4"
    assert Tick(1, 2, "b.png", 3, 5, 5).describe() == "b.png (2/2): step 4/5"
    assert Tick(1, 2, "b.png", 5, 10, 5).fraction == pytest.approx(0.75)


def test_addresses_and_sizes():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")
    assert parse_size("50mb") == 50 * 1024**2 and parse_size("300kb") == 300 * 1024 and parse_size("1000") == 1000
    with pytest.raises(SettingError, match="50mb") as refused:
        parse_size("lots")
    assert refused.value.setting == "max_upload"


def test_models_offer_embedded_and_named_models(tmp_path, monkeypatch):
    from yoda_sr.web.models import Models

    monkeypatch.setenv("YODA_SR_HOME", str(tmp_path))
    named = Path(SAMPLE).parents[1] / "weights" / "yoda-resshift-x4.safetensors"
    models = Models([str(named)], device="cpu")
    assert models.labels == ["yoda-resshift-x4", "yoda-srdiff-x4", "yoda-srdiff-x4-photo"]
    assert models.default == "yoda-resshift-x4"
    assert models.defaults("yoda-srdiff-x4").photo_model == "yoda-srdiff-x4-photo"
    assert models.sources["yoda-resshift-x4"] == str(named)  # the page shows the name, never the path
    resshift = models.defaults("yoda-resshift-x4")
    assert (resshift.steps, resshift.samplers, resshift.scale, resshift.max_steps) == (4, ("resshift",), 4, 15)
    assert Models(device="cpu").labels[0] == "yoda-srdiff-x4"
    with pytest.raises(SettingError, match="unknown model 'elsewhere'"):
        models.get("elsewhere")


def test_command_line_errors_are_one_line(tmp_path, monkeypatch, capsys):
    import socket

    monkeypatch.setenv("YODA_SR_HOME", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert cli("web", "--port", "0") == 2
    assert cli("web", "--max-upload", "lots") == 2
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert cli("web", "--port", str(taken.getsockname()[1])) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "yoda-sr: error: --port: must be 1..65535, got 0"
    assert lines[1] == "yoda-sr: error: --max-upload: must be a size such as 50mb, got 'lots'"
    assert lines[-1].startswith("yoda-sr: error: --port: cannot listen on 127.0.0.1:") and len(lines) == 3, lines
    assert not list(tmp_path.glob("yoda-sr-web-*"))


def png(path: Path, width: int, height: int, data: bytes) -> Path:
    """A PNG file written by hand: an RGB header claiming ``width`` x ``height``, then ``data`` as IDAT."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def deep_png(path: Path, rgb: np.ndarray) -> Path:
    """A 16-bit RGBA PNG with an sRGB ICC profile (24 x 24) made from 8-bit ``rgb``."""
    from PIL import ImageCms

    deep = rgb[:24, :24].astype(np.uint16) * 257 + 100
    alpha = np.tile(np.linspace(1000, 65000, 24, dtype=np.uint16), (24, 1))
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return write_picture(path, deep, alpha=alpha, icc_profile=profile, format="PNG")


def bad_uploads(folder: Path) -> dict[Path, str]:
    """Files that are not usable images, and the words their one-line message must hold."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.png").write_text("not an image at all\n")
    good = crop(folder / "whole.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    Image.new("RGB", (1, 1)).save(folder / "dot.png")
    return {
        folder / "notes.png": "notes.png: is not an image Pillow can read",
        folder / "truncated.png": "truncated.png: is truncated or damaged",
        png(folder / "bomb.png", 60000, 60000, zlib.compress(b"\0" * 1000)): "bomb.png: is 60000x60000",
        folder / "dot.png": "dot.png: is only 1x1 pixels",
    }


@pytest.mark.slow(60)
def test_server_over_the_api(tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    photo = crop(tmp_path / "in" / "crop.png")
    server = start(tmp_path / "server", "--max-upload", "200kb", "--max-pixels", "4000000")
    try:
        listening = server.listening()
        assert ("127.0.0.1", server.port) in listening, listening
        assert all(address in ("127.0.0.1", "::1") for address, _ in listening), listening
        client = Client(server.url, analytics_enabled=False, verbose=False, download_files=str(tmp_path / "got"))

        # The endpoint with defaults writes what `yoda-sr upscale FILE --seed 0` writes, under its name.
        got = Path(client.predict(handle_file(photo), api_name="/upscale"))
        assert cli("upscale", photo, "--seed", "0", "--quiet") == 0
        expected = photo.with_name("crop_x4.png")
        assert got.name == expected.name
        difference = np.abs(pixels(got).astype(int) - pixels(expected).astype(int))
        assert pixels(got).shape == pixels(expected).shape == (128, 128, 3) and difference.max() <= 1

        # A 16-bit RGBA PNG with an ICC profile comes back as `upscale` writes it: 16 bits, alpha, profile.
        deep = deep_png(tmp_path / "in" / "deep.png", pixels(photo))
        got = Path(client.predict(handle_file(deep), api_name="/upscale"))
        assert cli("upscale", deep, "--seed", "0", "--quiet") == 0
        mine, theirs = read_picture(got), read_picture(deep.with_name("deep_x4.png"))
        assert got.name == "deep_x4.png" and mine.bits == theirs.bits == 16 and mine.icc_profile == theirs.icc_profile
        assert mine.alpha is not None and theirs.alpha is not None and mine.icc_profile is not None
        assert np.abs(mine.rgb.astype(int) - theirs.rgb.astype(int)).max() <= 257  # one 8-bit level
        assert np.array_equal(mine.alpha, theirs.alpha)

        # Several images (and one bad file) on the page's event: a line each, the outputs and a zip.
        second = crop(tmp_path / "in" / "second.png", (70, 60, 102, 92))
        notes = tmp_path / "in" / "notes.png"
        notes.write_text("hello")
        files = [handle_file(photo), handle_file(second), handle_file(notes)]
        outputs = client.predict(files, *PAGE_DEFAULTS, "bicubic", api_name="/page")
        status, downloads = outputs[7], [Path(item) for item in outputs[5]]
        lines = status.splitlines()
        assert len(lines) == 3 and lines[0].startswith("crop.png -> crop_x4.png (128x128") and "/" not in status
        assert lines[2].startswith("notes.png: is not an image Pillow can read"), lines
        assert [path.name for path in downloads] == ["yoda-sr-upscale.zip", "crop_x4.png", "second_x4.png"]
        with zipfile.ZipFile(downloads[0]) as archive:
            assert archive.namelist() == ["crop_x4.png", "second_x4.png", "yoda-sr-upscale.jsonl"]
            assert archive.read("crop_x4.png") == downloads[1].read_bytes()
        record = json.loads(outputs[6])
        assert (record["input"], record["output"], record["base_seed"]) == ("crop.png", "crop_x4.png", 0)

        # Bad uploads and settings: one line each, no server path, no traceback; the server goes on.
        cases = bad_uploads(tmp_path / "bad")
        for path, words in cases.items():
            with pytest.raises(AppError) as error:
                client.predict(handle_file(path), api_name="/upscale")
            text = str(error.value)
            assert text.startswith(words) and "\n" not in text and str(tmp_path) not in text, text
            assert "/tmp" not in text and "Traceback" not in text, text
        with pytest.raises(AppError, match=r"^Steps \(--steps\): must be 1\.\.100 for this model, got 0$"):
            client.predict(handle_file(photo), steps=0, api_name="/upscale")
        large = tmp_path / "bad" / "large.png"
        large.write_bytes(os.urandom(300 * 1024))
        with pytest.raises(Exception, match="(?i)size"):
            client.predict(handle_file(large), api_name="/upscale")

        # No server path is accepted: a file reference the server did not hand out is refused.
        import httpx

        for path in ("/etc/passwd", str(server.tmp / "outside.log"), str(photo)):
            response = httpx.get(f"{server.url}gradio_api/file={path}")
            assert response.status_code in (403, 404), (path, response.status_code)
        for path in ("/etc/passwd", str(photo)):
            reference = {"path": path, "meta": {"_type": "gradio.FileData"}}
            answer = raw_call(server.url, "upscale", [reference] + [None] * 15)
            assert answer["success"] is False and "passwd" not in str(answer), answer

        # Cancel: the job stops at its next step, and the next job runs at once.
        big = crop(tmp_path / "in" / "big.png", (0, 0, 96, 96))
        job = client.submit(handle_file(big), steps=100, api_name="/upscale")
        deadline = time.monotonic() + 90
        while not (job.status().progress_data or []) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert job.status().progress_data, "no progress reported"
        assert "step" in (job.status().progress_data[0].desc or "")
        job.cancel()
        assert Path(client.predict(handle_file(photo), api_name="/upscale")).name == "crop_x4.png"
        cancelled = [line for line in server.stderr if "cancelled big.png" in line]
        assert cancelled and "/100" in cancelled[0] and "step 100/100" not in cancelled[0], server.stderr
        assert server.process.poll() is None
    finally:
        children = server.descendants()
        code = server.stop()
    assert code == 0, server.stderr[-20:]
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()], "processes left behind"
    assert not leftovers(server), leftovers(server)
    assert server.outside_traffic() == []
