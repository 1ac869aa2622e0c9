"""`yoda-sr evaluate` end to end with a tiny random SRDiff: the table, the files and the shared LR inputs.

The model's weights are random, so these tests check the evaluation's bookkeeping (same inputs and
seeds for every method, metrics as computed directly, outputs that agree), not image quality.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from yoda_sr.api import Settings, Upscaler
from yoda_sr.evaluation.metrics import LPIPS_NETS, Lpips, crop_border, image_metrics, lpips_missing_note
from yoda_sr.image.imaging import bicubic_degrade, resize_bicubic, to_array, to_tensor
from yoda_sr.seeds import derive_seed

from conftest import cli, photo, save_tiny_checkpoint

STEPS = "2"
CROPS = {
    "astronaut.png": ("astronaut", (100, 200), (64, 64)),
    "coffee.png": ("coffee", (50, 300), (66, 70)),
    "chelsea.png": ("chelsea", (80, 150), (64, 64)),
}
"""File name: (photo, top-left corner, (height, width)); coffee's sides are not multiples of 4."""
HEADER = "| method | PSNR-Y | SSIM-Y | PSNR-RGB | SSIM-RGB | pixel updates | s / image |"
LPIPS_HEADER = "| method | PSNR-Y | SSIM-Y | PSNR-RGB | SSIM-RGB | LPIPS-VGG | LPIPS-Alex | pixel updates | s / image |"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def hr_crop(name: str) -> np.ndarray:
    source, (top, left), (height, width) = CROPS[name]
    return np.ascontiguousarray(photo(source)[top : top + height, left : left + width])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hr")
    for name in CROPS:
        Image.fromarray(hr_crop(name)).save(folder / name)
    return folder


@pytest.fixture(autouse=True)
def no_lpips_weights(tmp_path, monkeypatch):
    """Each test starts from an empty $YODA_SR_HOME (no LPIPS weights, whatever the user installed);
    tests that want them set ``lpips_home`` over it."""
    monkeypatch.setenv("YODA_SR_HOME", str(tmp_path / "empty-home"))


@pytest.fixture(scope="module")
def run(tmp_path_factory, model_file, data) -> dict:
    """One evaluation of three methods, with no LPIPS weights installed: exit code, stdout, stderr
    and the output folder.

    Module-scoped so the tests below share it; capsys is per test, so output is redirected here.
    """
    out = tmp_path_factory.mktemp("eval") / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    with (
        pytest.MonkeyPatch.context() as patch,
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        patch.setenv("YODA_SR_HOME", str(tmp_path_factory.mktemp("empty-home")))
        code = cli(
            "evaluate",
            "--model",
            model_file,
            "--data",
            data,
            "--steps",
            STEPS,
            "--device",
            "cpu",
            "--compare",
            "bicubic,plain,yoda",
            "--out",
            out,
        )
    return {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(), "out": out}


def expected_inputs(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(HR cropped top-left to multiples of 4, 8-bit LR), computed here from the imaging primitives."""
    hr, lr = bicubic_degrade(to_tensor(hr_crop(name)), 4)
    return to_array(hr), to_array(lr)


def table_rows(stdout: str) -> dict[str, list[str]]:
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("| ") and line != HEADER:
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def test_table_has_one_row_per_method_with_finite_numbers_and_the_lpips_note(run):
    assert run["code"] == 0, run["stderr"]
    lines = run["stdout"].splitlines()
    assert lines[0] == HEADER
    assert lines[1].startswith("|---|")
    rows = table_rows(run["stdout"])
    assert list(rows) == ["bicubic", "plain", "yoda"]
    assert sum(line.startswith("|") for line in lines) == 2 + 3
    for method, cells in rows.items():
        psnr_y, ssim_y, psnr_rgb, ssim_rgb = (float(cell) for cell in cells[:4])
        assert all(math.isfinite(value) for value in (psnr_y, ssim_y, psnr_rgb, ssim_rgb)), method
        assert 10 < psnr_y < 60 and 0 < ssim_y <= 1 and 0 < ssim_rgb <= 1, (method, cells)
    assert lines[5] == lpips_missing_note(LPIPS_NETS)  # the fixture's home has no LPIPS weights
    assert all(line.startswith("note: ") for line in lines[6:])
    assert rows["bicubic"][4] == "n/a"
    assert "Traceback" not in run["stderr"]
    assert run["stderr"].count("yoda-sr: [") == len(CROPS)


def test_summary_and_csv_agree(run, model_file):
    out = run["out"]
    summary = json.loads((out / "summary.json").read_text())
    records = read_csv(out / "per_image.csv")
    assert len(records) == 3 * len(CROPS)
    assert summary["images"] == len(CROPS) and summary["failed"] == 0
    assert summary["model_sha256"] == Upscaler.from_pretrained(model_file, device="cpu").loaded.sha256
    assert summary["settings"]["steps"] == 2 and summary["settings"]["attention"] == "edge"
    assert summary["compare"] == ["bicubic", "plain", "yoda"]
    assert summary["lpips"] == {"computed": [], "version": "0.1", "note": lpips_missing_note(LPIPS_NETS)}
    rows = table_rows(run["stdout"])
    for method, means in summary["methods"].items():
        mine = [record for record in records if record["method"] == method]
        assert sorted(record["image"] for record in mine) == sorted(CROPS)
        for name in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "seconds"):
            key = "seconds_per_image" if name == "seconds" else name
            assert means[key] == pytest.approx(np.mean([float(record[name]) for record in mine]), abs=1e-12)
        assert rows[method][0] == f"{means['psnr_y']:.2f}" and rows[method][1] == f"{means['ssim_y']:.4f}"
        assert rows[method][2] == f"{means['psnr_rgb']:.2f}" and rows[method][3] == f"{means['ssim_rgb']:.4f}"
    assert summary["methods"]["bicubic"]["update_fraction"] is None
    assert {record["update_fraction"] for record in records if record["method"] == "bicubic"} == {""}
    assert {(record["method"] == "bicubic", record["cleaned"]) for record in records} == {(True, ""), (False, "none")}
    assert summary["cleaned"] == dict.fromkeys(CROPS, "none")  # clean photos: checked, nothing found
    assert summary["methods"]["plain"]["update_fraction"] == 1.0
    assert 0 < summary["methods"]["yoda"]["update_fraction"] < 1


def test_bicubic_row_equals_metrics_computed_directly(run):
    records = {
        record["image"]: record for record in read_csv(run["out"] / "per_image.csv") if record["method"] == "bicubic"
    }
    direct = []
    for name in CROPS:
        hr, lr = expected_inputs(name)
        upscaled = to_array(resize_bicubic(to_tensor(lr), size=hr.shape[:2]))
        scores = image_metrics(upscaled, hr, 4)
        direct.append(scores)
        for metric, value in scores.items():
            assert float(records[name][metric]) == pytest.approx(value, abs=1e-9), (name, metric)
        assert np.array_equal(pixels(run["out"] / "bicubic" / name), upscaled)
    row = table_rows(run["stdout"])["bicubic"]
    assert row[0] == f"{np.mean([s['psnr_y'] for s in direct]):.2f}"
    assert row[1] == f"{np.mean([s['ssim_y'] for s in direct]):.4f}"


def test_plain_and_yoda_get_the_same_lr_and_seed(run, model_file):
    """The written LR is the 8-bit bicubic LR; both diffusion results are reproduced from it with the image's seed."""
    out = run["out"]
    upscaler = Upscaler.from_pretrained(model_file, device="cpu")
    for name in CROPS:
        hr, lr = expected_inputs(name)
        assert np.array_equal(pixels(out / "lr" / name), lr)
        seed = derive_seed(0, name)
        for method, attention in (("plain", "none"), ("yoda", "auto")):
            result = upscaler.upscale(lr, seed=seed, settings=Settings(steps=2, attention=attention))
            assert result.image.shape == hr.shape
            assert np.array_equal(pixels(out / method / name), result.image), (name, method)
        assert not np.array_equal(pixels(out / "plain" / name), pixels(out / "yoda" / name))


def test_grid_shows_every_image_in_a_row_named_by_its_path_under_labelled_columns(run):
    """grid.png: all three images (not only the first few), each row named at the left, a labelled
    column per input, method and truth; the cells are the written files' pixels."""
    from yoda_sr.image.grids import GAP, HEADER, fit_row_labels, layout

    picture = pixels(run["out"] / "grid.png")
    keys = sorted(CROPS)  # the order the folder is read in
    band, _ = fit_row_labels(keys)
    plan = layout(len(CROPS), 1 + 3 + 1, (64, 64), colorbar=False, band=band)
    assert picture.shape == (plan.height, plan.width, 3) and band > 0
    for row, name in enumerate(keys):
        for column, method in enumerate(["bicubic", "plain", "yoda"], start=1):
            top, left = plan.origin(row, column)
            image = pixels(run["out"] / method / name)
            across = (image.shape[1] - 64) // 2  # a centre crop of the smallest image's side (coffee is 68 wide)
            cell = np.repeat(np.repeat(image[:, across : across + 64], plan.zoom, axis=0), plan.zoom, axis=1)
            assert np.array_equal(picture[top : top + plan.cell[0], left : left + plan.cell[1]], cell), (name, method)
        top = plan.origin(row, 0)[0]
        ink = picture[top : top + plan.cell[0], GAP : band - GAP].min(axis=2) < 128
        assert ink.sum() > 10, f"row {row} ({name}) has no name"
    labels = picture[:HEADER].min(axis=2) < 128
    for column in range(plan.columns):
        left = plan.origin(0, column)[1]
        assert labels[:, left : left + plan.cell[1]].sum() > 10, f"column {column} has no label"


def test_worst_png_shows_where_yoda_does_worst_against_its_reference(run):
    """worst.png and summary.json's "worst": the images ranked by how much worse yoda scores than the
    reference (here bicubic by PSNR-Y: no LPIPS weights, no base), each a crop where yoda's squared
    error exceeds the reference's most, enlarged; the crops are the written files' pixels."""
    from yoda_sr.evaluation.baselines import ground_truth
    from yoda_sr.evaluation.pictures import WORST_ZOOM, worst_crop
    from yoda_sr.image.grids import layout

    out = run["out"]
    worst = json.loads((out / "summary.json").read_text())["worst"]
    assert worst["metric"] == "psnr_y" and worst["against"] == "bicubic"
    records = {(r["image"], r["method"]): r for r in read_csv(out / "per_image.csv")}
    scores = {
        name: float(records[(name, "bicubic")]["psnr_y"]) - float(records[(name, "yoda")]["psnr_y"]) for name in CROPS
    }
    assert [row["image"] for row in worst["rows"]] == sorted(CROPS, key=lambda name: -scores[name])
    side = 64 - 2 * 4  # the smallest image's side, less the metrics' border
    for row in worst["rows"]:
        assert row["score"] == pytest.approx(scores[row["image"]], abs=1e-12)
        hr = ground_truth(hr_crop(row["image"]), 4)
        files = {method: pixels(out / method / row["image"]) for method in ("bicubic", "yoda")}
        left, top = row["crop"]["left"], row["crop"]["top"]
        assert (left, top, row["crop"]["side"]) == worst_crop(hr, files["yoda"], files["bicubic"], 4, side)
        assert (
            row["crop"]["side"] == side and 4 <= left <= hr.shape[1] - 4 - side and 4 <= top <= hr.shape[0] - 4 - side
        )
    picture = pixels(out / "worst.png")
    plan = layout(len(CROPS), 5, (side * WORST_ZOOM, side * WORST_ZOOM), colorbar=False)
    band = picture.shape[1] - plan.width  # the row labels' band, measured from their text
    plan = layout(len(CROPS), 5, (side * WORST_ZOOM, side * WORST_ZOOM), colorbar=False, band=band)
    assert picture.shape == (plan.height, plan.width, 3) and band > 0
    for index, row in enumerate(worst["rows"]):
        left, top = row["crop"]["left"], row["crop"]["top"]
        crop = pixels(out / "yoda" / row["image"])[top : top + side, left : left + side]
        cell_top, cell_left = plan.origin(index, 3)  # LR, bicubic, plain, yoda, HR
        shown = picture[cell_top : cell_top + plan.cell[0], cell_left : cell_left + plan.cell[1]]
        assert np.array_equal(shown, np.repeat(np.repeat(crop, WORST_ZOOM * plan.zoom, 0), WORST_ZOOM * plan.zoom, 1))


def test_the_worst_crop_is_where_the_subject_adds_error_the_reference_does_not_have():
    from yoda_sr.evaluation.pictures import worst_crop, worst_images
    from yoda_sr.evaluation.results import Record

    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (96, 128, 3)).astype(np.uint8)
    reference = np.clip(hr.astype(int) + rng.integers(-6, 7, hr.shape), 0, 255).astype(
        np.uint8
    )  # small error everywhere
    subject = hr.copy()
    subject[50:70, 90:110] ^= np.uint8(0b1000)  # cross-hatch-like texture in one place only
    left, top, side = worst_crop(hr, subject, reference, 4, 16)
    assert side == 16 and 90 <= left <= 94 and 50 <= top <= 54
    assert worst_crop(hr, subject, reference, 4, 500)[2] == 96 - 8  # at most the image, less the border

    def record(image, method, lpips):
        return Record(image, method, 30.0, 0.9, 30.0, 0.9, lpips, None, None, 1.0)

    records = [record("a", "base", 0.2), record("a", "yoda", 0.25), record("b", "base", 0.3), record("b", "yoda", 0.2)]
    records += [record("c", "base", 0.1), record("c", "yoda", 0.4), record("d", "yoda", 0.9)]  # d: no base
    metric, against, rows = worst_images(records, ["base", "yoda"])
    assert (metric, against) == ("lpips_vgg", "base")
    assert [(row.image, round(row.score, 6)) for row in rows] == [("c", 0.3), ("a", 0.05), ("b", -0.1)]
    assert worst_images(records, ["base", "plain"]) == ("", "", [])  # no yoda: no worst.png


def test_a_diffusion_method_below_bicubic_gets_one_line_with_the_likely_cause(run):
    rows = table_rows(run["stdout"])
    below = [m for m in ("plain", "yoda") if float(rows[m][0]) < float(rows["bicubic"][0])]
    assert below, "the tiny random model was expected to score below bicubic"
    notes = [line for line in run["stdout"].splitlines() if line.startswith("note: ")]
    assert [line.split()[1] for line in notes] == below
    assert all(f"{STEPS} ddpm step(s) are likely too few (this model's default is 20)" in line for line in notes)


def test_explanations_name_the_measured_cause():
    from yoda_sr.evaluation.results import explain

    def means(**psnr):
        return {method: {"psnr_y": value} for method, value in psnr.items()}

    assert explain(means(bicubic=25.0, plain=26.0, yoda=27.0), 2, "ddpm", 5) == []
    (few,) = explain(means(bicubic=25.0, plain=22.9, yoda=27.0), 2, "ddpm", 5)
    assert few.startswith("note: plain scores 2.10 dB below bicubic (PSNR-Y): 2 ddpm step(s) are likely too few")
    assert "7.9 dB below bicubic at 1 step" in few and "bench/plain_steps.py" in few
    (ddim,) = explain(means(bicubic=25.0, plain=24.9, yoda=26.0), 20, "ddim", 20)
    assert "DDIM" in ddim and "up to 20 steps" in ddim
    (plain_only,) = explain(means(bicubic=25.0, plain=24.0, yoda=26.0), 20, "ddpm", 20)
    assert "yoda does not" in plain_only and "plain_fraction" in plain_only
    both = explain(means(bicubic=25.0, plain=24.0, yoda=24.5), 20, "ddpm", 20)
    assert [line.split()[1] for line in both] == ["plain", "yoda"]
    assert all("does not improve on bicubic" in line for line in both)


def evaluate_into(out: Path, model_file: Path, data: Path, *extra) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli(
            "evaluate", "--model", model_file, "--data", data, "--steps", STEPS, "--device", "cpu", "-o", out, *extra
        )
    return code, stdout.getvalue(), stderr.getvalue()


def test_an_interrupted_evaluation_resumes_and_computes_only_what_is_missing(
    run, model_file, data, tmp_path, monkeypatch
):
    import shutil

    from yoda_sr.evaluation.core import Evaluation

    out = tmp_path / "out"
    shutil.copytree(run["out"], out)
    (out / "yoda" / "coffee.png").unlink()  # as if killed while writing coffee's results
    (out / "grid.png").unlink()
    computed = []
    original = Evaluation.image

    def spy(self, rgb, key, methods=None):
        computed.append((key, list(methods or self.methods)))
        return original(self, rgb, key, methods)

    monkeypatch.setattr(Evaluation, "image", spy)
    monkeypatch.setenv("YODA_SR_HOME", str(tmp_path / "home"))  # no LPIPS weights, as in the first run
    compare = ("--compare", "bicubic,plain,yoda")
    code, stdout, stderr = evaluate_into(out, model_file, data, *compare)
    assert code == 0, stderr
    assert computed == [("coffee.png", ["yoda"])]
    assert f"resuming the evaluation in {out}: 2 of 3 image(s) done already" in stderr
    assert (
        {m: cells[:-1] for m, cells in table_rows(stdout).items()}
        == {  # all but s / image
            m: cells[:-1] for m, cells in table_rows(run["stdout"]).items()
        }
    )

    def without_seconds(path):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in read_csv(path)]

    assert without_seconds(out / "per_image.csv") == without_seconds(run["out"] / "per_image.csv")
    assert np.array_equal(pixels(out / "yoda" / "coffee.png"), pixels(run["out"] / "yoda" / "coffee.png"))
    assert np.array_equal(pixels(out / "grid.png"), pixels(run["out"] / "grid.png"))

    computed.clear()  # everything done: nothing computed, same table
    code, stdout, stderr = evaluate_into(out, model_file, data, *compare)
    assert code == 0 and computed == [] and "3 of 3 image(s) done already" in stderr

    computed.clear()  # the default comparison adds base: only base is computed, the rest is read back
    code, stdout, stderr = evaluate_into(out, model_file, data)
    assert code == 0, stderr
    assert computed == [(name, ["base"]) for name in sorted(CROPS)]
    assert list(table_rows(stdout)) == ["bicubic", "base", "plain", "yoda"]


def test_a_folder_holding_another_evaluation_is_refused_in_one_line(run, model_file, data, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(run["out"], out)
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    code, stdout, stderr = evaluate_into(out, model_file, data, "--seed", "7")
    assert code == 2 and stdout == ""
    assert stderr.splitlines() == [
        f"yoda-sr: error: --out: {out} holds a different evaluation (seed 0 there, 7 here); choose another "
        "folder, or overwrite it (--overwrite)"
    ]
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before


def test_bad_compare_value_is_one_line_and_exit_2(data, model_file, tmp_path, capsys):
    code = cli("evaluate", "--model", model_file, "--data", data, "--compare", "bicubic,srgan", "--out", tmp_path / "o")
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        "yoda-sr: error: --compare: unknown method 'srgan'; choose from bicubic, base, plain, yoda or spandrel:FILE"
    ]
    assert not (tmp_path / "o").exists()


def test_bad_images_are_skipped_counted_and_exit_1(model_file, tmp_path, capsys):
    folder = tmp_path / "hr"
    folder.mkdir()
    rgb = hr_crop("astronaut.png")
    grey16 = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey16).save(folder / "grey16.png")
    Image.fromarray(rgb[:12, :12]).save(folder / "tiny.png")
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    code = cli("evaluate", "--model", model_file, "--data", folder, "--compare", "bicubic", "--out", out, "-q")
    captured = capsys.readouterr()
    assert code == 1
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("yoda-sr: error: ") for line in errors), errors
    assert any("broken.png" in line for line in errors) and any("tiny.png" in line for line in errors)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 1 and summary["failed"] == 2
    grey8 = np.repeat(np.asarray(Image.fromarray(rgb).convert("L"))[:, :, None], 3, axis=2)
    _, lr = bicubic_degrade(to_tensor(grey8), 4)
    expected = image_metrics(to_array(resize_bicubic(to_tensor(to_array(lr)), size=grey8.shape[:2])), grey8, 4)
    assert summary["methods"]["bicubic"]["psnr_y"] == pytest.approx(expected["psnr_y"], abs=1e-9)
    assert list(table_rows(captured.out)) == ["bicubic"]


@pytest.mark.parametrize("case", ["empty data", "missing data", "missing model", "non-empty out", "bad limit"])
def test_errors_are_one_line(case, model_file, data, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    out = tmp_path / "out"
    args = {
        "empty data": ("--model", model_file, "--data", empty, "--out", out),
        "missing data": ("--model", model_file, "--data", tmp_path / "nowhere", "--out", out),
        "missing model": ("--model", tmp_path / "nothing.safetensors", "--data", data, "--out", out),
        "non-empty out": ("--model", model_file, "--data", data, "--out", busy),
        "bad limit": ("--model", model_file, "--data", data, "--limit", "0", "--out", out),
    }[case]
    code = cli("evaluate", *args)
    err = capsys.readouterr().err
    assert code == (1 if case in ("empty data", "missing data") else 2), err
    assert len(err.strip().splitlines()) == 1 and err.startswith("yoda-sr: error: "), err
    assert (busy / "keep.txt").read_text() == "mine"
    assert not out.exists()


@pytest.mark.parametrize("content", [b"\xff\xfe garbage", b"[1, 2]", b'"a string"'])
def test_a_damaged_summary_is_refused_in_one_line(content, model_file, data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_bytes(content)
    code, stdout, stderr = evaluate_into(out, model_file, data)
    assert code == 2 and stdout == "" and "Traceback" not in stderr
    assert stderr.splitlines() == [
        f"yoda-sr: error: --out: {out / 'summary.json'} is not a yoda-sr evaluation; choose another folder, or "
        "overwrite it (--overwrite)"
    ]
    assert sorted(path.name for path in out.iterdir()) == ["summary.json"]


@pytest.fixture(scope="module")
def rrdb_model_file(tmp_path_factory) -> Path:
    """A tiny SRDiff whose residual base is its RRDB encoder's output (so base differs from bicubic)."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("rrdb") / "tiny-rrdb.safetensors", "srdiff-tiny-rrdb")


def evaluate_cli(*args) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli("evaluate", *args)
    return code, stdout.getvalue(), stderr.getvalue()


def test_base_is_the_models_known_region_and_what_yoda_leaves_undiffused(rrdb_model_file, data, tmp_path, monkeypatch):
    monkeypatch.setenv("YODA_SR_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    args = ("--model", rrdb_model_file, "--data", data, "--steps", STEPS, "--lower-bound", "0", "--out", out)
    # Pixel-level masks (--sparse off), so that a pixel with A = 0 is one that is never diffused.
    code, stdout, stderr = evaluate_cli(*args, "--compare", "bicubic,base,yoda", "--sparse", "off", "-q")
    assert code == 0, stderr
    rows = table_rows(stdout)
    assert list(rows) == ["bicubic", "base", "yoda"] and rows["base"][4] == "n/a"
    upscaler = Upscaler.from_pretrained(rrdb_model_file, device="cpu")
    model = upscaler.model
    identical = []
    for name in CROPS:
        hr, lr = expected_inputs(name)
        base = pixels(out / "base" / name)
        multiple = model.info.size_multiple // math.gcd(model.info.size_multiple, 4)
        pad = (0, (-lr.shape[1]) % multiple, 0, (-lr.shape[0]) % multiple)
        with torch.no_grad():  # the RRDB encoder's residual base, on the LR padded as sampling pads it
            padded = torch.nn.functional.pad(to_tensor(lr), pad, mode="replicate")
            cond = model.prepare(padded, resize_bicubic(padded, scale=4))
        assert np.array_equal(base, to_array(cond.base[..., : hr.shape[0], : hr.shape[1]])), name
        assert not np.array_equal(base, pixels(out / "bicubic" / name)), name
        settings = Settings(steps=2, lower_bound=0, sparse=False)
        result = upscaler.upscale(lr, seed=derive_seed(0, name), settings=settings)
        yoda = pixels(out / "yoda" / name)
        assert np.array_equal(yoda, result.image)
        untouched = result.attention == 0  # never diffused (l = 0): the known region, i.e. the base
        assert untouched.any(), name
        assert np.array_equal(yoda[untouched], base[untouched]), name
        identical.append(np.all(yoda == base, axis=-1).mean())
    assert 0 < min(identical) and max(identical) < 1
    records = [record for record in read_csv(out / "per_image.csv") if record["method"] == "base"]
    assert len(records) == len(CROPS) and {record["update_fraction"] for record in records} == {""}
    for record in records:
        hr, _ = expected_inputs(record["image"])
        direct = image_metrics(pixels(out / "base" / record["image"]), hr, 4)
        assert float(record["psnr_y"]) == pytest.approx(direct["psnr_y"], abs=1e-9)


def test_lpips_columns_appear_when_the_weights_are_installed(lpips_home, model_file, data, tmp_path, monkeypatch):
    monkeypatch.setenv("YODA_SR_HOME", str(lpips_home))
    out = tmp_path / "out"
    code, stdout, stderr = evaluate_cli(
        "--model", model_file, "--data", data, "--compare", "bicubic,base", "--out", out
    )
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0] == LPIPS_HEADER and len(lines) == 2 + 2  # no note: both backbones computed
    rows = table_rows(stdout.replace(LPIPS_HEADER, HEADER))
    records = read_csv(out / "per_image.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lpips"] == {"computed": ["vgg", "alex"], "version": "0.1", "note": None}
    for column, net in ((4, "vgg"), (5, "alex")):
        lpips = Lpips(net)
        for method in ("bicubic", "base"):
            mine = [record for record in records if record["method"] == method]
            for record in mine:
                hr, _ = expected_inputs(record["image"])
                image = pixels(out / method / record["image"])
                expected = lpips(crop_border(image, 4), crop_border(hr, 4))
                assert float(record[f"lpips_{net}"]) == pytest.approx(expected, abs=1e-6)
            mean = np.mean([float(record[f"lpips_{net}"]) for record in mine])
            assert summary["methods"][method][f"lpips_{net}"] == pytest.approx(mean, abs=1e-12)
            assert rows[method][column] == f"{mean:.4f}" and 0 < mean < 1


def test_degraded_lr_is_the_clean_lr_degraded_and_belongs_to_the_evaluation(run, model_file, data, tmp_path):
    """`--degrade noise:5,jpeg:60`: every method gets the clean 8-bit LR with noise drawn from the
    image's seed and then JPEG; the summary names it, and a folder of a clean evaluation is another
    evaluation (one line), while one written before --degrade existed still resumes as clean."""
    import shutil

    from yoda_sr.image.degradations import Degradation

    out = tmp_path / "degraded"
    code, stdout, stderr = evaluate_into(out, model_file, data, "--compare", "bicubic", "--degrade", "noise:5,jpeg:60")
    assert code == 0, stderr
    assert "LR degraded by noise:5,jpeg:60" in stderr
    settings = json.loads((out / "summary.json").read_text())["settings"]
    assert settings["degrade"] == "noise:5,jpeg:60" and settings["lr"].endswith("then noise:5,jpeg:60")
    for name in CROPS:
        _, clean = expected_inputs(name)
        expected = Degradation(noise=5, jpeg=60).apply(clean, np.random.default_rng(derive_seed(0, name, "degrade")))
        lr = pixels(out / "lr" / name)
        assert np.array_equal(lr, expected) and not np.array_equal(lr, clean)
    worse = float(table_rows(stdout)["bicubic"][0])
    assert worse < float(table_rows(run["stdout"])["bicubic"][0]) - 0.3

    clean_copy = tmp_path / "clean"
    shutil.copytree(run["out"], clean_copy)
    compare = ("--compare", "bicubic,plain,yoda")
    code, _, stderr = evaluate_into(clean_copy, model_file, data, *compare, "--degrade", "jpeg:60")
    assert code == 2 and "degrade none there, jpeg:60 here" in stderr
    summary = json.loads((clean_copy / "summary.json").read_text())
    del summary["settings"]["degrade"]  # as written before --degrade existed
    (clean_copy / "summary.json").write_text(json.dumps(summary))
    code, _, stderr = evaluate_into(clean_copy, model_file, data, "--compare", "bicubic,plain,yoda")
    assert code == 0 and "3 of 3 image(s) done already" in stderr

    code, stdout, stderr = evaluate_into(tmp_path / "bad", model_file, data, "--degrade", "blur:2")
    assert code == 2 and stdout == ""
    assert stderr.strip().splitlines() == [
        "yoda-sr: error: --degrade: unknown degradation 'blur:2'; use noise:SIGMA, jpeg:QUALITY or none"
    ]
    assert not (tmp_path / "bad").exists()


def test_the_clean_mode_belongs_to_the_evaluation_and_older_folders_were_not_cleaned(run, model_file, data, tmp_path):
    """The summary records --clean; a folder written before it existed resumes only as `off` (its LR
    went in as it was), and with auto it is another evaluation, said in one line."""
    import shutil

    assert json.loads((run["out"] / "summary.json").read_text())["settings"]["clean"] == "auto"
    older = tmp_path / "older"
    shutil.copytree(run["out"], older)
    summary = json.loads((older / "summary.json").read_text())
    del summary["settings"]["clean"]
    (older / "summary.json").write_text(json.dumps(summary))
    code, _, stderr = evaluate_into(older, model_file, data, "--compare", "bicubic,plain,yoda")
    assert code == 2 and "clean off there, auto here" in stderr
    code, _, stderr = evaluate_into(older, model_file, data, "--compare", "bicubic,plain,yoda", "--clean", "off")
    assert code == 0 and "3 of 3 image(s) done already" in stderr and "LR cleaning off" in stderr


def test_the_models_methods_get_the_lr_cleaned_once_and_bicubic_gets_it_as_it_is(model_file, tmp_path):
    """With noisy LR, base is the regression output of the cleaned LR and yoda the upscale of the
    noisy LR (which cleans it the same way); bicubic enlarges the noisy LR. The crops are 128 px, so
    their LR is large enough (32 px) for noise to be estimated."""
    from yoda_sr.evaluation.baselines import bicubic_upscale, regression_base
    from yoda_sr.image.restoration import clean

    data = tmp_path / "hr"
    data.mkdir()
    for source in ("astronaut", "coffee"):
        Image.fromarray(np.ascontiguousarray(photo(source)[40:168, 100:228])).save(data / f"{source}.png")
    out = tmp_path / "noisy"
    code, _, stderr = evaluate_into(out, model_file, data, "--compare", "bicubic,base,yoda", "--degrade", "noise:8")
    assert code == 0, stderr
    upscaler = Upscaler.from_pretrained(model_file, device="cpu")
    cleaned_any = False
    for path in sorted(data.iterdir()):
        name = path.name
        lr = pixels(out / "lr" / name)
        cleaned, done = clean(lr)
        cleaned_any |= done.kind == "noise"
        assert np.array_equal(pixels(out / "bicubic" / name), bicubic_upscale(lr, (128, 128)))
        assert np.array_equal(pixels(out / "base" / name), regression_base(upscaler, cleaned, 4))
        result = upscaler.upscale(lr, seed=derive_seed(0, name), settings=Settings(steps=int(STEPS)))
        assert np.array_equal(pixels(out / "yoda" / name), result.image) and result.cleaning == done
        found = {r["method"]: r["cleaned"] for r in read_csv(out / "per_image.csv") if r["image"] == name}
        assert found == {"bicubic": "", "base": done.describe(), "yoda": done.describe()}  # what it found and did
        assert json.loads((out / "summary.json").read_text())["cleaned"][name] == done.describe()
        if done.kind == "noise":
            assert f"{name} (LR noise sigma {done.level:.1f} removed): PSNR-Y" in stderr
    assert cleaned_any
