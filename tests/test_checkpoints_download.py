"""Downloads against a local server that speaks the Hub's protocol (tests/hubserver.py).

Nothing is mocked: ``hf_hub_download`` and yoda-sr's URL client talk HTTP to 127.0.0.1. Entries
come from a user registry in ``$YODA_SR_HOME/checkpoints.toml``, the way a user adds their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from yoda_sr import checkpoints
from yoda_sr.convert import srdiff
from yoda_sr.errors import YodaError

from conftest import cli, tiny_model
from hubserver import HubServer, use_endpoint

REPO = "yoda-test/srdiff-tiny"


def model_bytes(tmp_path: Path, seed: int) -> bytes:
    """A yoda-sr safetensors file of a tiny SRDiff (what a Hub-hosted yoda-sr model looks like)."""
    model = tiny_model("srdiff-tiny", seed=seed)
    path = checkpoints.save(
        tmp_path / f"model-{seed}.safetensors",
        model.state_dict(),
        {
            "kind": "denoiser",
            "arch": "srdiff",
            "hparams": model.config,
            "scale": 4,
            "schedule": {"kind": "cosine", "steps": 100, "start": 1e-6, "end": 0.03, "cosine_s": 0.008},
        },
    )
    return path.read_bytes()


def upstream_ckpt_bytes(tmp_path: Path) -> bytes:
    model = tiny_model("srdiff-tiny", seed=9)
    torch.save({"state_dict": {"model": srdiff.to_upstream(model.state_dict())}}, tmp_path / "up.ckpt")
    return (tmp_path / "up.ckpt").read_bytes()


def write_registry(home: Path, entries: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "checkpoints.toml").write_text(entries)


def hf_entry(name: str, revision: str, sha256: str | None = None) -> str:
    pin = f'sha256 = "{sha256}"\n' if sha256 else ""
    return f"""
[{name}]
kind = "denoiser"
format = "safetensors"
source = {{ kind = "hf", repo = "{REPO}", filename = "model.safetensors", revision = "{revision}" }}
{pin}description = "test model"
licence = "CC0-1.0"
page = "https://huggingface.co/{REPO}"
"""


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch):
    with HubServer() as server:
        monkeypatch.setenv("YODA_SR_HOME", str(tmp_path / "home"))
        use_endpoint(monkeypatch, server, tmp_path / "hf")
        yield server
        assert not server.errors


def test_hub_download_cache_hit_and_pinned_revision(hub, tmp_path):
    old_bytes, new_bytes = model_bytes(tmp_path, 1), model_bytes(tmp_path, 2)
    old = hub.add_repo_file(REPO, "model.safetensors", old_bytes)
    hub.add_repo_file(REPO, "model.safetensors", new_bytes)  # main moves on
    write_registry(checkpoints.home(), hf_entry("pinned", old) + hf_entry("latest", "main"))

    path = checkpoints.download("pinned", progress=False)
    assert path.read_bytes() == old_bytes
    assert hub.count("GET", contains="/resolve/") == 1
    assert checkpoints.read_lock()["pins"]["pinned"]["sha256"] == hashlib.sha256(old_bytes).hexdigest()

    hub.clear_requests()
    assert checkpoints.download("pinned", progress=False) == path  # cache hit
    loaded = checkpoints.load_denoiser("pinned")
    assert hub.requests == []
    assert loaded.sha256 == hashlib.sha256(old_bytes).hexdigest()
    assert loaded.model.config == tiny_model("srdiff-tiny").config

    assert checkpoints.download("latest", progress=False).read_bytes() == new_bytes


def test_corrupted_download_is_detected_and_removed(hub, tmp_path, capsys):
    good, served = model_bytes(tmp_path, 1), model_bytes(tmp_path, 2)
    commit = hub.add_repo_file(REPO, "model.safetensors", served)
    write_registry(checkpoints.home(), hf_entry("m", commit, hashlib.sha256(good).hexdigest()))

    assert cli("checkpoints", "download", "m") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sha256" in err and "removed" in err
    cached = [p for p in (tmp_path / "hf" / "hub").rglob("*") if p.is_file() or p.is_symlink()]
    assert not [p for p in cached if p.name == "model.safetensors" or "blobs" in p.parts]
    assert not checkpoints.is_installed("m")


def test_verify_detects_and_removes_a_damaged_install(hub, tmp_path, capsys):
    commit = hub.add_repo_file(REPO, "model.safetensors", model_bytes(tmp_path, 1))
    write_registry(checkpoints.home(), hf_entry("m", commit))
    path = checkpoints.download("m", progress=False)
    assert cli("checkpoints", "verify") == 0
    assert "ok  m" in capsys.readouterr().out
    with open(path, "r+b") as handle:  # flip bytes at the end of the tensor data
        handle.seek(-4, os.SEEK_END)
        handle.write(b"\x00\xff\x00\xff")
    assert cli("checkpoints", "verify", "m") == 1
    assert "FAILED  m" in capsys.readouterr().out
    assert not path.exists() and not checkpoints.is_installed("m")


def test_offline_with_an_empty_cache_fails_in_one_line_without_requests(hub, tmp_path):
    commit = hub.add_repo_file(REPO, "model.safetensors", model_bytes(tmp_path, 1))
    write_registry(checkpoints.home(), hf_entry("m", commit))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for args in (["checkpoints", "download", "m"], ["checkpoints", "download", "m", "--offline"]):
        result = subprocess.run(
            [sys.executable, "-m", "yoda_sr", *args], capture_output=True, text=True, env=env, timeout=120, check=False
        )
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert "yoda-sr checkpoints download m" in result.stderr and "offline" in result.stderr
    assert hub.requests == []


def url_entry(name: str, url: str) -> str:
    return f"""
[{name}]
kind = "denoiser"
format = "srdiff"
scale = 4
source = {{ kind = "url", url = "{url}" }}
description = "upstream-format test model"
licence = "CC0-1.0"
page = "{url}"
"""


def test_truncated_url_transfer_resumes_and_installs(hub, tmp_path):
    data = upstream_ckpt_bytes(tmp_path)
    hub.add_url_file("model.ckpt", data)
    write_registry(checkpoints.home(), url_entry("u", hub.url("model.ckpt")))
    hub.truncate_next("model.ckpt", len(data) // 3)

    path = checkpoints.download("u", progress=False)
    gets = [r for r in hub.requests if r.method == "GET"]
    assert len(gets) == 2
    assert gets[1].headers["range"] == f"bytes={len(data) // 3}-"
    metadata = checkpoints.read_metadata(path)
    assert metadata["arch"] == "srdiff" and metadata["source"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert not list((checkpoints.home() / "downloads").rglob("*.ckpt*"))  # the raw pickle is gone
    checkpoints.load_denoiser("u")


def test_interrupted_download_resumes_on_the_next_run(hub, tmp_path):
    data = upstream_ckpt_bytes(tmp_path)
    hub.add_url_file("model.ckpt", data)
    target = tmp_path / "dl" / "model.ckpt"
    hub.truncate_next("model.ckpt", 1000)
    with pytest.raises(Exception, match="next run resumes"):
        checkpoints.download_url(hub.url("model.ckpt"), target, attempts=1, progress=False)
    assert (tmp_path / "dl" / "model.ckpt.part").stat().st_size == 1000
    checkpoints.download_url(hub.url("model.ckpt"), target, attempts=1, progress=False)
    assert target.read_bytes() == data
    assert hub.requests[-1].headers["range"] == "bytes=1000-"


def test_first_download_hash_is_pinned_and_enforced(hub, tmp_path, capsys):
    data = upstream_ckpt_bytes(tmp_path)
    hub.add_url_file("model.ckpt", data)
    write_registry(checkpoints.home(), url_entry("u", hub.url("model.ckpt")))
    checkpoints.download("u", progress=False)
    assert cli("checkpoints", "remove", "u") == 0
    hub.add_url_file("model.ckpt", data[:-8] + b"tampered")  # the server now serves other bytes
    assert cli("checkpoints", "download", "u") == 1
    assert "recorded at its first download" in capsys.readouterr().err
    assert not checkpoints.is_installed("u")
    assert not list((checkpoints.home() / "downloads").rglob("model.ckpt"))


def test_manual_entries_say_where_to_download(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("YODA_SR_HOME", str(tmp_path))
    assert cli("checkpoints", "download", "sr3-face-16-128") == 1
    err = capsys.readouterr().err
    assert "drive.google.com" in err and "checkpoints import FILE --name sr3-face-16-128" in err


def test_list_json_has_every_entry_with_source_page_and_licence(capsys, tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("YODA_SR_HOME", str(tmp_path))
    assert cli("checkpoints", "list", "--json") == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    expected = {
        "dino-resnet50",
        "dino-vits8",
        "dino-vits16",
        "srdiff-celeba-8x",
        "srdiff-div2k-4x",
        "sr3-face-16-128",
        "sr3-face-64-512",
    }
    assert expected <= set(rows)
    for name in expected:
        assert rows[name]["page"].startswith("https://") and rows[name]["licence"]
        assert rows[name]["source"]["kind"] in ("hf", "url", "manual", "embedded")
        assert rows[name]["installed"] is False
    hf = rows["dino-vits8"]["source"]
    assert len(hf["revision"]) == 40 and hf["repo"] == "timm/vit_small_patch8_224.dino"


# --- integrity: nothing outside the store is deleted, no bad weights are kept or pinned -----------


@pytest.mark.parametrize("name", ["../../victim", "ABS", "../victim", "victim/.."])
def test_remove_and_verify_never_touch_files_outside_the_store(tmp_path, monkeypatch, capsys, name):
    home = tmp_path / "a" / "b" / "home"
    monkeypatch.setenv("YODA_SR_HOME", str(home))
    (home / "checkpoints").mkdir(parents=True)
    victim = tmp_path / "a" / "victim.safetensors"
    victim.write_bytes(b"precious")
    target = str(victim.with_suffix("")) if name == "ABS" else name
    assert cli("checkpoints", "remove", target) == 2
    assert "checkpoint name" in capsys.readouterr().err
    lock = {"installed": {target: {"path": str(victim), "sha256": "0" * 64}}, "pins": {}}
    (home / "checkpoints.lock.json").write_text(json.dumps(lock))
    cli("checkpoints", "verify")
    assert victim.read_bytes() == b"precious"


def test_remove_deletes_only_what_the_store_wrote(tmp_path, monkeypatch):
    monkeypatch.setenv("YODA_SR_HOME", str(tmp_path / "home"))
    store = tmp_path / "home" / "checkpoints"
    store.mkdir(parents=True)
    victim = tmp_path / "victim.safetensors"
    victim.write_bytes(b"precious")
    (store / "linked.safetensors").symlink_to(victim)
    assert cli("checkpoints", "remove", "linked") == 0
    assert victim.read_bytes() == b"precious"


@pytest.mark.parametrize(
    "content",
    [
        b"\x00garbage\xff",
        b"[1, 2]",
        b'"text"',
        b'{"installed": "x", "pins": {}}',
        b'{"installed": {}, "pins": []}',
        b'{"installed": {"mine": "here"}}',
        b'{"installed": {"mine": {"path": "x"}}}',
    ],
)
def test_a_damaged_lock_file_is_one_line_and_changes_nothing(tmp_path, monkeypatch, capsys, content):
    """Malformed tables and records were silently dropped (pins with them), or a KeyError; an
    import wrote its file into the store before failing on the lock."""
    monkeypatch.setenv("YODA_SR_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "checkpoints").mkdir(parents=True)
    (tmp_path / "home" / "checkpoints.lock.json").write_bytes(content)
    kept = tmp_path / "home" / "checkpoints" / "kept.safetensors"
    kept.write_bytes(b"an installed file")
    model = upstream_ckpt_bytes(tmp_path)
    (tmp_path / "m.ckpt").write_bytes(model)
    for args in (
        ["checkpoints", "list"],
        ["checkpoints", "verify"],
        ["checkpoints", "import", tmp_path / "m.ckpt", "--name", "mine"],
        ["checkpoints", "remove", "kept"],
    ):
        code = cli(*args)
        err = capsys.readouterr().err
        assert code == 1 and "Traceback" not in err and err.count("\n") == 1, err
        assert "checkpoints.lock.json is" in err and "remove it" in err, err
    assert sorted(p.name for p in (tmp_path / "home" / "checkpoints").iterdir()) == ["kept.safetensors"]
    assert (tmp_path / "home" / "checkpoints.lock.json").read_bytes() == content


def test_a_resume_answered_from_byte_zero_is_not_spliced(hub, tmp_path):
    data = upstream_ckpt_bytes(tmp_path)
    hub.add_url_file("model.ckpt", data)
    write_registry(checkpoints.home(), url_entry("u", hub.url("model.ckpt")))
    hub.truncate_next("model.ckpt", len(data) // 3)
    hub.restart_next_range("model.ckpt")
    path = checkpoints.download("u", progress=False)
    metadata = checkpoints.read_metadata(path)
    assert metadata["source"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert checkpoints.read_lock()["pins"]["u"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_non_finite_weights_are_never_installed_or_pinned_and_force_repins(hub, tmp_path, capsys):
    model = tiny_model("srdiff-tiny", seed=9)
    state = srdiff.to_upstream(model.state_dict())
    poisoned = {key: value.clone() for key, value in state.items()}
    first = next(key for key, value in poisoned.items() if value.is_floating_point() and value.numel() > 1)
    poisoned[first][0] = float("nan")
    torch.save({"state_dict": {"model": poisoned}}, tmp_path / "bad.ckpt")
    hub.add_url_file("model.ckpt", (tmp_path / "bad.ckpt").read_bytes())
    write_registry(checkpoints.home(), url_entry("u", hub.url("model.ckpt")))
    assert cli("checkpoints", "download", "u") == 1
    assert "non-finite" in capsys.readouterr().err
    assert not checkpoints.is_installed("u") and "u" not in checkpoints.read_lock()["pins"]

    good = upstream_ckpt_bytes(tmp_path)
    lock = {"installed": {}, "pins": {"u": {"sha256": "f" * 64, "revision": None}}}  # a bad file's pin
    (checkpoints.home() / "checkpoints.lock.json").write_text(json.dumps(lock))
    hub.add_url_file("model.ckpt", good)
    assert cli("checkpoints", "download", "u") == 1  # the pin is enforced...
    assert cli("checkpoints", "download", "u", "--force") == 0  # ...until the user forces a new one
    assert checkpoints.read_lock()["pins"]["u"]["sha256"] == hashlib.sha256(good).hexdigest()


def test_the_run_log_hash_is_that_of_the_file_loaded(hub, tmp_path):
    commit = hub.add_repo_file(REPO, "model.safetensors", model_bytes(tmp_path, 1))
    write_registry(checkpoints.home(), hf_entry("m", commit))
    path = checkpoints.download("m", progress=False)
    loaded = checkpoints.load_denoiser("m")
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    with open(path, "r+b") as handle:  # one flipped bit in the tensor data
        handle.seek(-3, os.SEEK_END)
        byte = handle.read(1)
        handle.seek(-3, os.SEEK_END)
        handle.write(bytes([byte[0] ^ 1]))
    with pytest.raises(YodaError, match="changed since it was installed"):
        checkpoints.load_denoiser("m")


def test_list_shows_licence_and_size_and_info_takes_files_and_run_folders(tmp_path, monkeypatch, capsys):
    from conftest import save_tiny_checkpoint

    monkeypatch.setenv("YODA_SR_HOME", str(tmp_path / "home"))
    assert cli("checkpoints", "list") == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[:6] == ["NAME", "KIND", "SOURCE", "LICENCE", "SIZE", "INSTALLED"]
    assert any(row.startswith("yoda-srdiff-x4") and "Apache-2.0" in row and "MiB" in row for row in rows)
    registry = checkpoints.load_registry()
    start = {name: header.index(name) for name in ("LICENCE", "SIZE", "INSTALLED")}
    blocks: dict[str, list[str]] = {}
    for row in rows:  # a row's LICENCE and SIZE cells wrap onto the lines below it (NAME blank there)
        if row[: start["LICENCE"]].strip():
            blocks[row.split()[0]] = []
        blocks[list(blocks)[-1]].append(row)
    assert list(blocks) == list(registry)
    for name, block in blocks.items():
        licence = " ".join(line[start["LICENCE"] : start["SIZE"]].strip() for line in block).strip()
        assert licence == registry[name].licence, name  # whole, never cut
        if not registry[name].embedded:  # installed ones show the file's size
            size = " ".join(line[start["SIZE"] : start["INSTALLED"]].strip() for line in block).strip()
            assert size == registry[name].size, name

    run = tmp_path / "run"
    save_tiny_checkpoint(run / "weights" / "ema.safetensors")
    for target in (run, run / "weights" / "ema.safetensors"):
        assert cli("checkpoints", "info", target) == 0
        out = capsys.readouterr().out
        assert "metadata.arch: srdiff" in out and "sha256: " in out
        assert "{" not in out and "'" not in out  # no Python reprs


def test_an_unreachable_hub_fails_fast_in_one_line_and_the_cache_still_serves(tmp_path, monkeypatch, capsys):
    import time

    monkeypatch.setenv("YODA_SR_HOME", str(tmp_path / "home"))
    with HubServer() as server:
        use_endpoint(monkeypatch, server, tmp_path / "hf")
        commit = server.add_repo_file(REPO, "model.safetensors", model_bytes(tmp_path, 1))
        write_registry(checkpoints.home(), hf_entry("m", commit))
        checkpoints.download("m", progress=False)
        assert cli("checkpoints", "remove", "m") == 0
    # the server is gone: its port now refuses connections
    started = time.monotonic()
    assert cli("checkpoints", "download", "m") == 0  # from the Hub cache, without the network
    write_registry(
        checkpoints.home(),
        hf_entry("m", commit) + hf_entry("n", commit).replace('filename = "model.safetensors"', 'filename = "x.bin"'),
    )
    assert cli("checkpoints", "download", "n") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out of reach" in err
    assert time.monotonic() - started < 15
