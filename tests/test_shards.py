"""Choosing images without walking folders (``--files-from``), shards (``--shard``), their run logs and
``yoda-sr runs merge``; and the scale-out options' usage errors. No Ray here (tests/test_ray.py)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yoda_sr.errors import SettingError
from yoda_sr.jobs.files import find_images
from yoda_sr.jobs.manifest import read_manifest, select_found
from yoda_sr.jobs.shards import Shard, parse_shard, shard_of

from conftest import cli, free_port, photo, save_tiny_checkpoint


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def tree(folder: Path, count: int = 6) -> list[Path]:
    """Small crops in a folder and a sub-folder."""
    image = photo("astronaut")
    paths = []
    for index in range(count):
        path = folder / ("deep" if index % 2 else "") / f"img{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(image[30 * index : 30 * index + 16, 40 * index : 40 * index + 16])).save(
            path
        )
        paths.append(path)
    return paths


def test_shard_forms_and_environments():
    assert parse_shard("2/5") == Shard(2, 5) and str(Shard(2, 5)) == "2/5"
    assert Shard(2, 5).run_log == "yoda-sr-upscale.2-of-5.jsonl"
    slurm = {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}
    assert parse_shard("auto", {**slurm, "SLURM_ARRAY_TASK_MAX": "4"}) == Shard(3, 4)  # --array=1-4
    assert parse_shard("auto/4", slurm) == Shard(3, 4)
    assert parse_shard("auto/8", {"JOB_COMPLETION_INDEX": "7"}) == Shard(7, 8)
    bad = [
        ("5/5", {}),
        ("-1/5", {}),
        ("1/0", {}),
        ("x", {}),
        ("auto", {}),
        ("auto", {"JOB_COMPLETION_INDEX": "3"}),  # Kubernetes tells no count
        ("auto/3", {"JOB_COMPLETION_INDEX": "3"}),
        ("auto/5", slurm),  # the array has 4 tasks
        ("auto", {**slurm, "SLURM_ARRAY_TASK_MAX": "7"}),  # --array=1-7:2
    ]
    for text, environ in bad:
        with pytest.raises(SettingError) as error:
            parse_shard(text, environ)
        assert error.value.setting == "shard" and "\n" not in str(error.value)


def test_shards_are_disjoint_cover_the_folder_and_follow_paths_not_order(tmp_path):
    keys = [f"{folder}/photo {index}.{ext}" for folder in ("a", "b/c") for index in range(150) for ext in ("jpg",)]
    for count in (1, 2, 3, 7):
        owners = [[index for index in range(count) if Shard(index, count).owns(key)] for key in keys]
        assert all(len(owner) == 1 for owner in owners)  # each key in exactly one shard
        sizes = [sum(owner == [index] for owner in owners) for index in range(count)]
        assert sum(sizes) == len(keys) and min(sizes) > len(keys) / count / 2  # and roughly even
    assert shard_of("a/x.png", 7) == shard_of("a/x.gif", 7)  # outputs that could collide stay together
    # through the folder walk: the same split whatever the folder's listing order or other arguments
    tree(tmp_path / "in", 6)
    chosen = []
    for index in range(3):
        found = find_images([tmp_path / "in"], recursive=True)
        selection = select_found(found, Shard(index, 3))
        chosen.append({(folder / image.name).as_posix() for image, folder in selection.found.images})
        assert len(selection.inputs) == 6
    assert set().union(*chosen) == {f"{'deep/' if i % 2 else ''}img{i}.png" for i in range(6)}
    assert sum(map(len, chosen)) == 6


def test_manifest_problems_are_one_line_each(tmp_path, monkeypatch):
    tree(tmp_path / "photos", 3)
    manifest = tmp_path / "photos" / "list.txt"
    lines = ["# a comment", "img0.png", "", "deep/img1.png", "./img0.png", "../outside.png", "nope.png", "deep"]
    manifest.write_text("\n".join([*lines, str(tmp_path / "photos" / "img2.png")]) + "\n")
    (tmp_path / "outside.png").write_bytes(b"")
    selection = read_manifest(str(manifest))
    assert [(image.name, folder.as_posix()) for image, folder in selection.found.images] == [
        ("img0.png", "."),
        ("img1.png", "deep"),
        ("img2.png", "."),
    ]
    assert selection.found.notes == [f"{manifest}:5: ./img0.png: listed again (first on line 2); done once"]
    assert len(selection.problems) == 3
    outside, missing, folder = selection.problems
    assert outside.startswith(f"{manifest}:6: ../outside.png: outside the root {tmp_path / 'photos'}")
    assert missing == f"{manifest}:7: nope.png: no such file or folder"
    assert folder == f"{manifest}:8: deep: is a folder; a manifest lists image files"
    # --root moves the root: the outside entry is inside now, and keys are relative to it
    widened = read_manifest(str(manifest), root=tmp_path)
    assert ("outside.png", ".") in [(image.name, f.as_posix()) for image, f in widened.found.images]
    assert ("img1.png", "photos/deep") in [(image.name, f.as_posix()) for image, f in widened.found.images]
    # standard input: relative to the current folder
    monkeypatch.chdir(tmp_path / "photos")
    piped = read_manifest("-", stdin=io.StringIO("img0.png\ndeep/img1.png\n"))
    assert [image.as_posix() for image, _ in piped.found.images] == ["img0.png", "deep/img1.png"]


def test_sharded_manifest_runs_write_the_folder_runs_bytes_and_merge(tmp_path, model_file, capsys, monkeypatch):
    photos = tmp_path / "photos"
    tree(photos, 6)
    common = ["--model", model_file, "--steps", "1", "-q"]
    assert cli("upscale", photos, "-r", "-o", tmp_path / "reference", *common) == 0
    listing = sorted(path.relative_to(photos).as_posix() for path in photos.rglob("*.png"))
    (tmp_path / "list.txt").write_text("\n".join(f"photos/{name}" for name in listing) + "\n")
    out = tmp_path / "out"
    for index in range(3):
        args = ["--files-from", tmp_path / "list.txt", "--root", photos, "--shard", f"{index}/3"]
        assert cli("upscale", *args, "-o", out, *common) == 0
    for name in listing:
        assert (out / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name
    logs = sorted(path.name for path in out.glob("*.jsonl"))
    assert logs == [f"yoda-sr-upscale.{index}-of-3.jsonl" for index in range(3)]
    capsys.readouterr()
    assert cli("runs", "merge", out) == 0 and cli("runs", "merge", out) == 0  # again: nothing doubles
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"{out / 'yoda-sr-upscale.jsonl'}: 6 records of 6")
    merged = [json.loads(line) for line in (out / "yoda-sr-upscale.jsonl").read_text().splitlines()]
    reference = {json.loads(line)["seed"] for line in (tmp_path / "reference" / "yoda-sr-upscale.jsonl").open()}
    assert {record["seed"] for record in merged} == reference
    # a re-run of a shard skips its finished outputs; stdin works as a manifest
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO("photos/img0.png\n"))
    assert cli("upscale", "--files-from", "-", "--root", "photos", "-o", out, "--json", *common[:-1]) == 0
    assert capsys.readouterr().out == ""


def test_scale_out_usage_errors_are_one_line_and_write_nothing(tmp_path, model_file, capsys):
    photos = tmp_path / "photos"
    tree(photos, 1)
    (tmp_path / "list.txt").write_text("photos/img0.png\n")
    before = sorted(tmp_path.rglob("*"))
    base = ["--model", model_file, "-o", tmp_path / "out"]
    cases = [
        ["upscale", *base],  # no input at all
        ["upscale", photos, "--files-from", tmp_path / "list.txt", *base],
        ["upscale", photos, "--root", photos, *base],
        ["upscale", "--files-from", tmp_path / "missing.txt", *base],
        ["upscale", photos, "--shard", "3/3", *base],
        ["upscale", photos, "--shard", "auto", *base],
        ["upscale", photos, "--engine", "spark", *base],
        ["upscale", photos, "--workers", "2", *base],
        ["upscale", photos, "--engine", "ray", "--workers", "0", *base],
        ["upscale", photos, "--engine", "ray", "--ray-address", "somewhere", *base],
        ["upscale", photos, "--engine", "ray", "--batch-size", "2", *base],
        ["upscale", photos, "--engine", "ray", "--ray-address", f"127.0.0.1:{free_port()}", *base],
        ["runs", "merge", tmp_path / "nothing-here"],
    ]
    for args in cases:
        code = cli(*args)
        err = capsys.readouterr().err
        assert code in (1, 2), (args, code, err)
        assert len(err.splitlines()) == 1 and err.startswith("yoda-sr: error: "), (args, err)
    assert sorted(tmp_path.rglob("*")) == before
