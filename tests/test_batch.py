"""The shared batch runner: planning, refusing unsafe outputs, skipping finished work, going on past failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from yoda_sr.errors import YodaError
from yoda_sr.jobs.batch import Batch, Hints, Item, each


def make_inputs(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        (folder / name).write_bytes(b"image " + name.encode())
        paths.append(folder / name)
    return paths


def beside(image: Path, relative: Path, ending: str = ".out") -> Item:
    return Item(image, (relative / image.name).as_posix(), [image.with_name(image.stem + ending)])


class Recorder:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.notes: list[str] = []

    def batch(self, **options) -> Batch[Item]:
        return Batch(report=self.errors.append, note=self.notes.append, **options)


def write_output(item: Item) -> str:
    for output in item.pending:
        output.write_text(f"from {item.image.name}")
    return item.key


def test_finds_plans_runs_and_counts(tmp_path):
    make_inputs(tmp_path / "in", ["a.png", "b.png", "notes.txt"])
    recorder = Recorder()
    batch = recorder.batch()
    found = batch.find([tmp_path / "in"])
    items = batch.plan(beside(image, folder) for image, folder in found.images)
    assert [item.key for item in items] == ["a.png", "b.png"]
    done: list[str] = []
    tally = batch.run(items, each(write_output), done=lambda item, key: done.append(key))
    assert (tally.done, tally.skipped, tally.failed) == (2, 0, 0)
    assert done == ["a.png", "b.png"]
    assert (tmp_path / "in" / "a.out").read_text() == "from a.png"
    assert recorder.errors == [] and any("notes.txt" in note for note in recorder.notes)


def test_missing_inputs_fail_one_line_each_and_nothing_at_all_is_an_error(tmp_path):
    recorder = Recorder()
    batch = recorder.batch()
    make_inputs(tmp_path, ["a.png"])
    batch.find([tmp_path / "a.png", tmp_path / "nope.png"])
    assert batch.tally.failed == 1 and recorder.errors == [f"{tmp_path / 'nope.png'}: no such file or folder"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(YodaError, match="no images found in .*empty; give image files, or folders that hold some"):
        recorder.batch().find([tmp_path / "empty"])


def test_globs_are_expanded(tmp_path):
    make_inputs(tmp_path, ["a.png", "b.png", "c.jpg"])
    found = Batch().find([tmp_path / "*.png"])
    assert [image.name for image, _ in found.images] == ["a.png", "b.png"]


def test_refuses_to_overwrite_an_input_even_with_overwrite(tmp_path):
    image = make_inputs(tmp_path, ["a.png"])[0]
    recorder = Recorder()
    batch = recorder.batch(overwrite=True, hints=Hints(input="choose another name"))
    items = batch.plan([Item(image, "a.png", [image])])
    assert items == [] and batch.tally.failed == 1
    [line] = recorder.errors
    assert "is an input image; refusing to overwrite it (choose another name)" in line
    assert image.read_bytes() == b"image a.png"


def test_refuses_two_items_with_one_output(tmp_path):
    first, second = make_inputs(tmp_path, ["a.png", "a.jpg"])
    recorder = Recorder()
    batch = recorder.batch(hints=Hints(collision="rename one"))
    items = batch.plan([beside(first, Path()), beside(second, Path())])
    assert [item.image for item in items] == [first]
    [line] = recorder.errors
    assert line.startswith(f"{second}: its output") and f"also that of {first}; rename one" in line


def test_skips_finished_items_unless_overwrite_and_keeps_finished_outputs(tmp_path):
    first, second = make_inputs(tmp_path, ["a.png", "b.png"])
    (tmp_path / "a.out").write_text("old")
    recorder = Recorder()
    batch = recorder.batch(hints=Hints(exists="use overwrite", kept="use overwrite to replace"))
    items = batch.plan([beside(first, Path()), Item(second, "b.png", [tmp_path / "b.out", tmp_path / "a.bonus"])])
    assert [item.image for item in items] == [second] and batch.tally.skipped == 1
    assert recorder.notes == [f"skipped {first}: {tmp_path / 'a.out'} exists (use overwrite)"]
    (tmp_path / "a.bonus").write_text("old")
    recorder.notes.clear()
    items = recorder.batch().plan([Item(second, "b.png", [tmp_path / "b.out", tmp_path / "a.bonus"])])
    assert items[0].pending == [tmp_path / "b.out"]
    assert recorder.notes == [f"{second}: kept the existing {tmp_path / 'a.bonus'}"]
    again = recorder.batch(overwrite=True).plan([beside(first, Path())])
    assert again[0].pending == [tmp_path / "a.out"]
    recorder.batch(overwrite=True).run(again, each(write_output))
    assert (tmp_path / "a.out").read_text() == "from a.png"


def test_a_failure_is_one_line_and_the_batch_goes_on(tmp_path):
    images = make_inputs(tmp_path, ["a.png", "b.png", "c.png"])
    recorder = Recorder()
    batch = recorder.batch()

    def work(item: Item) -> str:
        if item.key == "a.png":
            raise YodaError("cannot read it")
        if item.key == "b.png":
            raise ZeroDivisionError("division by zero")
        return write_output(item)

    tally = batch.run(batch.plan(beside(image, Path()) for image in images), each(work))
    assert (tally.done, tally.failed) == (1, 2)
    assert recorder.errors == [f"{images[0]}: cannot read it", f"{images[1]}: ZeroDivisionError: division by zero"]
    assert (tmp_path / "c.out").exists()


def test_reraise_and_fatal_errors_stop_the_batch(tmp_path):
    images = make_inputs(tmp_path, ["a.png", "b.png"])

    def work(item: Item) -> None:
        raise KeyError(item.key)

    items = [beside(image, Path()) for image in images]
    with pytest.raises(KeyError):
        Batch(reraise=True).run(items, each(work))
    ran: list[str] = []

    def fatal(item: Item) -> None:
        ran.append(item.key)
        raise LookupError("no weights")

    with pytest.raises(LookupError):
        Batch(fatal=(LookupError,)).run(items, each(fatal))
    assert ran == ["a.png"]


def test_chunks_and_a_failing_chunk_fails_what_it_did_not_finish(tmp_path):
    images = make_inputs(tmp_path, [f"{index}.png" for index in range(5)])
    items = [beside(image, Path()) for image in images]
    chunks: list[list[str]] = []

    def work(chunk: list[Item]):
        chunks.append([item.key for item in chunk])
        yield chunk[0], "ok"
        if len(chunk) > 1:
            raise RuntimeError("out of memory")

    recorder = Recorder()
    finished: list[int] = []
    tally = recorder.batch().run(items, work, chunk=2, progress=finished.append)
    assert chunks == [["0.png", "1.png"], ["2.png", "3.png"], ["4.png"]]
    assert (tally.done, tally.failed) == (3, 2) and sum(finished) == 5
    assert recorder.errors == [f"{images[1]}: RuntimeError: out of memory", f"{images[3]}: RuntimeError: out of memory"]


def test_ranks_share_the_items_and_agree_on_conflicts(tmp_path):
    images = make_inputs(tmp_path, ["a.png", "b.png", "c.png", "c.jpg"])
    plans = []
    for rank in (0, 1):
        recorder = Recorder()
        batch = recorder.batch(shard=(rank, 2))
        items = batch.plan(beside(image, Path()) for image in images)
        plans.append(([item.key for item in items], recorder.errors))
    assert plans[0] == (["a.png", "c.png"], [])
    assert plans[1][0] == ["b.png"] and len(plans[1][1]) == 1 and "c.jpg" in plans[1][1][0]
