"""Files written whole or not at all (fsutil), and the PNG writer built on it."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from yoda_sr.attention.render import heatmap
from yoda_sr.fsutil import TEMP_MARK, atomic_save, atomic_write, temporary_path
from yoda_sr.image.io import save_png


def test_save_png_writes_a_readable_png(tmp_path):
    target = tmp_path / "map.png"
    colours = heatmap(np.random.default_rng(0).random((20, 30)))
    assert save_png(colours, target) == target
    with Image.open(target) as reread:
        assert reread.format == "PNG" and reread.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(reread), colours)
    assert [path.name for path in tmp_path.iterdir()] == ["map.png"]


def test_atomic_write_leaves_nothing_behind_on_error(tmp_path):
    target = tmp_path / "out.bin"

    def failing(handle):
        handle.write(b"half a file")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    assert list(tmp_path.iterdir()) == []

    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    assert target.read_bytes() == b"old"
    assert [path.name for path in tmp_path.iterdir()] == ["out.bin"]

    atomic_write(target, lambda handle: handle.write(b"new"))
    assert target.read_bytes() == b"new"
    assert [path.name for path in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_save_takes_writers_that_want_a_file_name(tmp_path):
    target = tmp_path / "state.pt"
    atomic_save(target, lambda temporary: torch.save({"step": 3}, temporary))
    assert torch.load(target, weights_only=True) == {"step": 3}
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())

    def failing(temporary):
        temporary.write_bytes(b"half")
        raise OSError("no space left on device")

    with pytest.raises(OSError):
        atomic_save(target, failing)
    assert torch.load(target, weights_only=True) == {"step": 3}
    assert [path.name for path in tmp_path.iterdir()] == ["state.pt"]


def test_temporary_names_are_hidden_ours_and_unique(tmp_path):
    target = tmp_path / "photo.png"
    first, second = temporary_path(target), temporary_path(target)
    assert first != second and first.parent == tmp_path
    assert first.name.startswith(".photo.png.") and first.name.endswith(TEMP_MARK)
    assert f".{os.getpid()}-" in first.name


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_claim_all_takes_every_claim_or_none(tmp_path):
    """Another live process holding one output's claim: none of the claims stays; else all are made."""
    import socket

    from yoda_sr.fsutil import claim_all, claim_path, release

    first, second = tmp_path / "a" / "x.png", tmp_path / "b" / "y.png"
    second.parent.mkdir()
    claim_path(second).write_text(f"{socket.gethostname()} 1\n")  # pid 1 lives: a live holder
    assert claim_all([first, second]) is None
    assert not claim_path(first).exists() and claim_path(second).exists()
    claim_path(second).unlink()
    held = claim_all([first, second])
    assert held == [claim_path(first), claim_path(second)] and all(path.exists() for path in held)
    for path in held:
        release(path)
    assert not any(path.exists() for path in held)
