"""The hostile-input sweep: every case is one `yoda-sr` command on a damaged, forged or impossible
input, run in-process inside its own sandbox folder (inputs, outputs, $YODA_SR_HOME, working
directory), and every case must end the same way:

- exactly one ``yoda-sr: error:`` line on stderr, naming the file (or flag, or variable) at fault
  and saying what to do, and no traceback;
- the exit code: 2 for a usage error (a flag, the environment, an output that cannot work), 1 when
  an input or a store file is at fault;
- no temporary or claim file left anywhere (``.yoda-tmp``, ``.yoda-claim``), no partial output;
- every input byte for byte as it was, and nothing created, changed or removed outside the output
  folder (the whole sandbox is snapshotted before and after, symbolic links not followed).

The corpora: images (truncated, forged, zero bytes, a wrong extension, a header claiming huge
dimensions, a symbolic-link loop, a folder named like an image), checkpoints (metadata that is not
JSON, not an object, lacks keys, holds strings for numbers, absurd hyperparameters, hostile
architecture names) and the store's ``checkpoints.lock.json``, training configs (zero, negative,
NaN and string values) and a damaged ``state/last.pt``, and the environment (``WORLD_SIZE=0``,
``RANK >= WORLD_SIZE``, ``--suffix`` with slashes, ``--tile 17``, ``--steps 0``, ``--block 10``,
``--sparse maybe``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from yoda_sr.weights_file import METADATA_KEY, read_metadata

from conftest import cli, photo, save_tiny_checkpoint

STEPS = ("--steps", "2")


# --- the sandbox and the checks every case shares -------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root``: relative path -> file hash, ``dir`` or ``link -> target``."""
    entries: dict[str, str] = {}
    for folder, folders, files in os.walk(root, followlinks=False):
        for name in folders + files:
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                entries[relative] = f"link -> {os.readlink(path)}"
            elif path.is_dir():
                entries[relative] = "dir"
            else:
                entries[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return entries


@dataclass
class Case:
    """One hostile command: how to build its sandbox, what it runs, what it must say."""

    build: Callable[[Path], list[object]]
    """Creates the inputs under the sandbox and returns the command's arguments."""
    code: int
    names: tuple[str, ...]
    """What the error line must name: a file name, a flag, a variable."""
    advice: str
    """A regular expression for what the error line tells the user to do (or what it must be)."""
    out: str | None = None
    """The output folder (relative to the sandbox), where the command may write; None: nowhere."""
    env: dict[str, str] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    """The images the output folder must hold afterwards (those of the good inputs beside a bad one)."""


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory) -> bytes:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors").read_bytes()


def sweep(case: Case, sandbox: Path, model: bytes, monkeypatch, capsys) -> None:
    """Build the case in ``sandbox``, run it, and check everything the module docstring promises."""
    (sandbox / "model.safetensors").write_bytes(model)
    monkeypatch.setenv("YODA_SR_HOME", str(sandbox / "home"))
    for variable in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in case.env.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.chdir(sandbox)
    args = case.build(sandbox)
    before = snapshot(sandbox)
    capsys.readouterr()

    code = cli(*args)
    err = capsys.readouterr().err
    after = snapshot(sandbox)

    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("yoda-sr: error:")]
    assert len(errors) == 1, err
    assert code == case.code, err
    for name in case.names:
        assert name in errors[0], (name, errors[0])
    assert re.search(case.advice, errors[0]), (case.advice, errors[0])
    left = [path for path in after if ".yoda-tmp" in path or ".yoda-claim" in path]
    assert not left, left
    inside = (case.out + "/") if case.out else None
    changed = sorted(
        path
        for path in before.keys() | after.keys()
        if before.get(path) != after.get(path) and not (inside and (path + "/").startswith(inside))
    )
    assert not changed, changed
    if case.out and (sandbox / case.out).is_dir():
        folder = sandbox / case.out
        written = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.suffix in (".png", ".npy"))
        assert written == sorted(case.outputs), written


# --- images ----------------------------------------------------------------------------------------


def png_bytes(array: np.ndarray | None = None, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(photo("astronaut")[:24, :32] if array is None else array).save(buffer, format)
    return buffer.getvalue()


def huge_header_png() -> bytes:
    """A valid PNG signature and IHDR claiming 100000 x 100000 pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def image_file(name: str, make: Callable[[Path], None]) -> Callable[[Path], Path]:
    def build(sandbox: Path) -> Path:
        folder = sandbox / "in"
        folder.mkdir(exist_ok=True)
        make(folder / name)
        return folder / name

    return build


IMAGES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "truncated": ("cut.png", lambda p: p.write_bytes(png_bytes()[: len(png_bytes()) // 2]), "again"),
    "forged": ("forged.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3), "remove it"),
    "zero bytes": ("empty.png", lambda p: p.write_bytes(b""), "copy it again or remove it"),
    "wrong extension": ("notes.jpg", lambda p: p.write_text("meeting notes, not a photo\n"), "remove it"),
    "huge dimensions": ("bomb.png", lambda p: p.write_bytes(huge_header_png()), "--max-pixels"),
    "symlink loop": ("loop.png", lambda p: p.symlink_to(p), "symbolic link"),
    "folder named like an image": ("folder.png", lambda p: p.mkdir(), "give image files"),
}


def image_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for label, (name, make, advice) in IMAGES.items():
        build = image_file(name, make)

        def upscale_file(sandbox: Path, build=build) -> list[object]:
            return ["upscale", build(sandbox), "-o", "out/", "--model", "model.safetensors", *STEPS]

        def upscale_folder(sandbox: Path, build=build) -> list[object]:
            build(sandbox)
            (sandbox / "in" / "good.png").write_bytes(png_bytes())
            return ["upscale", "in", "-r", "-o", "out", "--model", "model.safetensors", *STEPS]

        def attention_file(sandbox: Path, build=build) -> list[object]:
            return ["attention", build(sandbox), "--method", "edge", "--scale", "1", "--out", "maps/"]

        def evaluate_folder(sandbox: Path, build=build) -> list[object]:
            build(sandbox)
            (sandbox / "in" / "good.png").write_bytes(png_bytes(photo("astronaut")[:64, :64]))
            return ["evaluate", "--data", "in", "--model", "model.safetensors", "--compare", "bicubic", "-o", "eval"]

        cases[f"upscale {label}"] = Case(upscale_file, 1, (name,), advice, out="out")
        if label != "folder named like an image":  # in a folder, a folder is a folder (-r goes inside)
            cases[f"upscale folder with {label}"] = Case(
                upscale_folder, 1, (name,), advice, out="out", outputs=("good.png",)
            )
        cases[f"attention {label}"] = Case(attention_file, 1, (name,), advice, out="maps")
        if label != "folder named like an image":
            cases[f"evaluate folder with {label}"] = Case(
                evaluate_folder, 1, (name,), advice, out="eval", outputs=("bicubic/good.png", "grid.png", "lr/good.png")
            )
    return cases


# --- checkpoints and the store's lock file ---------------------------------------------------------


def hostile_metadata(metadata: dict, case: str) -> str:
    changed = json.loads(json.dumps(metadata))
    if case == "invalid json":
        return "{not json"
    if case == "a list":
        return "[1, 2, 3]"
    if case == "a string":
        return '"denoiser"'
    if case == "no hparams":
        del changed["hparams"]
    elif case == "no schedule":
        del changed["schedule"]
    elif case == "string numbers":
        changed["hparams"] = {k: str(v) if isinstance(v, int) else v for k, v in changed["hparams"].items()}
    elif case == "absurd hparams":  # a memory bomb, refused before anything is allocated
        changed["hparams"] = {**changed["hparams"], "hidden_size": 200_000, "rrdb_num_block": 60_000}
    elif case == "large hparams the weights do not have":
        changed["hparams"] = {**changed["hparams"], "hidden_size": 4096}
    elif case == "a huge schedule":
        changed["schedule"] = {**changed["schedule"], "steps": 2_000_000_000}
    elif case == "a NaN eta":
        changed["sampling"] = {**changed.get("sampling", {}), "eta": float("nan")}
    elif case == "steps as words":
        changed["sampling"] = {**changed.get("sampling", {}), "steps": "twenty"}
    elif case == "a flat floor as words":
        changed["yoda"] = {**changed.get("yoda", {}), "flat_floor": "smooth"}
    elif case == "dunder arch":
        changed["arch"] = "__class__"
    elif case == "path arch":
        changed["arch"] = "../../x"
    elif case == "unknown condition":
        changed["x_up"] = "__import__('os')"
    elif case == "unknown process":
        changed["process"] = "ddim-but-faster"
    elif case == "a ResShift chain out of range":
        changed["process"] = "resshift"
        changed["schedule"] = {"kind": "exponential", "steps": 15, "kappa": 2.0, "eta_first": 0.5, "eta_last": 1.5}
        changed["sampling"] = {"steps": 4, "sampler": "resshift"}
    elif case == "a ResShift model with a DDPM sampler":
        changed["process"] = "resshift"
        changed["schedule"] = {"kind": "exponential", "steps": 15}
        changed["sampling"] = {"steps": 4, "sampler": "ddpm"}
    return json.dumps(changed)


def hostile_checkpoint(case: str) -> Callable[[Path], Path]:
    def build(sandbox: Path) -> Path:
        good = sandbox / "model.safetensors"
        with safe_open(str(good), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        path = sandbox / "hostile.safetensors"
        save_file(tensors, str(path), metadata={METADATA_KEY: hostile_metadata(read_metadata(good), case)})
        return path

    return build


METADATA = [
    "invalid json",
    "a list",
    "a string",
    "no hparams",
    "no schedule",
    "string numbers",
    "absurd hparams",
    "large hparams the weights do not have",
    "a huge schedule",
    "a NaN eta",
    "steps as words",
    "a flat floor as words",
    "dunder arch",
    "path arch",
    "unknown condition",
    "unknown process",
    "a ResShift chain out of range",
    "a ResShift model with a DDPM sampler",
]

LOCKS = {
    "garbage": os.urandom(64) + b"\xff",
    "a list": b"[1, 2]",
    "a string": b'"installed"',
    "installed as a string": b'{"installed": "mine", "pins": {}}',
    "pins as a list": b'{"installed": {}, "pins": []}',
    "record as a string": b'{"installed": {"mine": "here"}, "pins": {}}',
    "record without its hash": b'{"installed": {"mine": {"path": "x"}}, "pins": {}}',
}


def with_lock(content: bytes, args: Callable[[Path], list[object]]) -> Callable[[Path], list[object]]:
    def build(sandbox: Path) -> list[object]:
        (sandbox / "home").mkdir(exist_ok=True)
        (sandbox / "home" / "checkpoints.lock.json").write_bytes(content)
        (sandbox / "in").mkdir(exist_ok=True)
        (sandbox / "in" / "a.png").write_bytes(png_bytes())
        return args(sandbox)

    return build


def checkpoint_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for label in METADATA:
        build = hostile_checkpoint(label)

        def upscale(sandbox: Path, build=build) -> list[object]:
            path = build(sandbox)
            (sandbox / "in").mkdir()
            (sandbox / "in" / "a.png").write_bytes(png_bytes())
            return ["upscale", "in/a.png", "-o", "out.png", "--model", path, *STEPS]

        def import_(sandbox: Path, build=build) -> list[object]:
            return ["checkpoints", "import", build(sandbox), "--name", "mine"]

        cases[f"upscale --model with {label} metadata"] = Case(upscale, 1, ("hostile.safetensors",), "cannot be used")
        cases[f"import with {label} metadata"] = Case(import_, 1, ("hostile.safetensors",), "cannot be used")
    commands: dict[str, Callable[[Path], list[object]]] = {
        "list": lambda s: ["checkpoints", "list"],
        "verify": lambda s: ["checkpoints", "verify"],
        "info": lambda s: ["checkpoints", "info", "yoda-srdiff-x4"],
        "upscale --model NAME": lambda s: ["upscale", "in/a.png", "-o", "out.png", "--model", "yoda-srdiff-x4"],
        "import": lambda s: ["checkpoints", "import", "model.safetensors", "--name", "mine"],
    }
    for label, content in LOCKS.items():
        for command, args in commands.items():
            cases[f"{command} with a lock file that is {label}"] = Case(
                with_lock(content, args), 1, ("checkpoints.lock.json",), "remove it"
            )
    return cases


# --- training configs and damaged run state --------------------------------------------------------


TRAIN_VALUES = {
    "zero hr_size": ("hr_size = 0", "--hr-size"),
    "negative batch_size": ("batch_size = -2", "--batch-size"),
    "zero val_steps": ("val_steps = 0", "--val-steps"),
    "zero val_images": ("val_images = 0", "--val-images"),
    "NaN seed": ("seed = nan", "--seed"),
    "NaN learning rate": ("lr = nan", "--lr"),
    "string batch_size": ('batch_size = "4"', "--batch-size"),
    "string iterations": ('iterations = "ten"', "--iterations"),
    "negative lower_bound": ("lower_bound = -0.5", "--lower-bound"),
}


def train_config(line: str) -> Callable[[Path], list[object]]:
    def build(sandbox: Path) -> list[object]:
        (sandbox / "photos").mkdir()
        for name in ("astronaut", "coffee"):
            Image.fromarray(photo(name)[:64, :64]).save(sandbox / "photos" / f"{name}.png")
        base = {"data": '"photos"', "model": '"srdiff-tiny"', "hr_size": "32"}
        key, value = (part.strip() for part in line.split("=", 1))
        lines = [f"{name} = {text}" for name, text in {**base, key: value}.items()]
        (sandbox / "recipe.toml").write_text("\n".join(lines) + "\n")
        return ["train", "--config", "recipe.toml", "--out", "run"]

    return build


RUN = ["--model", "srdiff-tiny", "--hr-size", "32", "--attention", "none", "--batch-size", "2", "--warmup", "0"]
RUN += ["--val-images", "1", "--val-steps", "1", "--save-every", "1", "--val-every", "1"]
"""The settings of the run that the damaged-state cases resume (as a user resumes it)."""


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory) -> Path:
    """A real run folder after one step: config.toml, weights and state/last.pt."""
    root = tmp_path_factory.mktemp("run")
    (root / "photos").mkdir()
    for name in ("astronaut", "coffee"):
        Image.fromarray(photo(name)[:64, :64]).save(root / "photos" / f"{name}.png")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YODA_SR_HOME", str(root / "home"))
        assert cli("train", "--data", root / "photos", "--out", root / "run", *RUN, "--iterations", "1") == 0
    return root


def damaged_state(damage: str, source: Path) -> Callable[[Path], list[object]]:
    def build(sandbox: Path) -> list[object]:
        import torch

        shutil.copytree(source / "photos", sandbox / "photos")
        shutil.copytree(source / "run", sandbox / "run")
        state = sandbox / "run" / "state" / "last.pt"
        if damage == "truncated":
            state.write_bytes(state.read_bytes()[:1000])
        elif damage == "garbage":
            state.write_bytes(os.urandom(4096))
        elif damage == "empty":
            state.write_bytes(b"")
        else:
            payload = torch.load(state, weights_only=True)
            payload["model"] = dict(list(payload["model"].items())[1:])
            torch.save(payload, state)
        return ["train", "--out", "run", "--resume", "--iterations", "2"]  # the rest from run/config.toml

    return build


# --- the environment and impossible flags ----------------------------------------------------------


def one_image(sandbox: Path) -> None:
    (sandbox / "in").mkdir()
    (sandbox / "in" / "a.png").write_bytes(png_bytes())


def upscale_with(*extra: object) -> Callable[[Path], list[object]]:
    def build(sandbox: Path) -> list[object]:
        one_image(sandbox)
        return ["upscale", "in", "-o", "out", "--model", "model.safetensors", *extra]

    return build


ENVIRONMENT = {
    "WORLD_SIZE=0": Case(upscale_with(*STEPS), 2, ("WORLD_SIZE",), "unset them", env={"WORLD_SIZE": "0"}),
    "RANK >= WORLD_SIZE": Case(
        upscale_with(*STEPS), 2, ("RANK=5",), "unset them", env={"RANK": "5", "WORLD_SIZE": "2"}
    ),
    "--suffix with slashes": Case(upscale_with("--suffix", "/../../escaped"), 2, ("--suffix",), "use letters"),
    "--suffix with a slash, beside the input": Case(
        lambda s: (one_image(s), ["upscale", "in/a.png", "--model", "model.safetensors", "--suffix", "a/b"])[1],
        2,
        ("--suffix",),
        "use letters",
    ),
    "--tile 17": Case(upscale_with("--tile", "17", *STEPS), 2, ("--tile",), "at most half|at least"),
    "--steps 0": Case(upscale_with("--steps", "0"), 2, ("--steps",), "must be 1"),
    "--block 10": Case(upscale_with("--block", "10", *STEPS), 2, ("--block",), "multiple of"),
    "--sparse maybe": Case(upscale_with("--sparse", "maybe", *STEPS), 2, ("--sparse",), "on or off"),
    "--steps 0 for attention": Case(
        lambda s: (one_image(s), ["attention", "in/a.png", "--steps", "0", "--out", "maps/"])[1],
        2,
        ("--steps",),
        "must be",
    ),
}


def photos(sandbox: Path) -> None:
    (sandbox / "photos").mkdir(exist_ok=True)
    for name in ("astronaut", "coffee"):
        Image.fromarray(photo(name)[:64, :64]).save(sandbox / "photos" / f"{name}.png")


def train_with(*extra: object) -> Callable[[Path], list[object]]:
    def build(sandbox: Path) -> list[object]:
        photos(sandbox)
        return ["train", "--data", "photos", "--out", "run", *RUN, "--iterations", "1", *extra]

    return build


def run_is_a_file(sandbox: Path) -> list[object]:
    photos(sandbox)
    (sandbox / "run").write_text("notes\n")
    return ["train", "--data", "photos", "--out", "run", *RUN, "--iterations", "1"]


TRAIN_ENVIRONMENT = {
    "train with WORLD_SIZE=0": Case(train_with(), 2, ("WORLD_SIZE=0",), "unset them", env={"WORLD_SIZE": "0"}),
    "train with RANK >= WORLD_SIZE": Case(
        train_with(), 2, ("RANK=3",), "unset them", env={"RANK": "3", "WORLD_SIZE": "2"}
    ),
    "train with WORLD_SIZE=2 and no MASTER_ADDR": Case(
        train_with(), 2, ("MASTER_ADDR",), "torchrun", env={"RANK": "0", "WORLD_SIZE": "2"}
    ),
    "train with LOCAL_RANK=-1": Case(train_with(), 2, ("LOCAL_RANK=-1",), "unset it", env={"LOCAL_RANK": "-1"}),
    "upscale with LOCAL_RANK=-1": Case(
        upscale_with(*STEPS), 2, ("LOCAL_RANK=-1",), "unset it", env={"LOCAL_RANK": "-1"}
    ),
    "train --seed beyond 64 bits": Case(train_with("--seed", 2**70), 2, ("--seed",), "must be 0"),
    "train --out an existing file": Case(run_is_a_file, 2, ("--out", "run"), "choose another"),
    "train --batch-size 100000000": Case(train_with("--batch-size", 100_000_000), 2, ("--batch-size",), "lower it"),
}

# --- the sweep ---------------------------------------------------------------------------------------

CASES: dict[str, Case] = {**image_cases(), **checkpoint_cases(), **ENVIRONMENT, **TRAIN_ENVIRONMENT}
for label, (line, flag) in TRAIN_VALUES.items():
    CASES[f"train config with {label}"] = Case(train_config(line), 2, (flag, "recipe.toml"), "must")


# --- the store's folder, full disks and output names -------------------------------------------------


UNUSABLE_HOMES = {"a regular file": "homefile", "/dev/null": os.devnull}


def unusable_home(sandbox: Path, kind: str) -> str:
    if kind == "a regular file":
        (sandbox / "homefile").write_text("not a folder\n")
    return UNUSABLE_HOMES[kind]


for _kind, _home in UNUSABLE_HOMES.items():
    CASES[f"import with YODA_SR_HOME {_kind}"] = Case(
        lambda s, kind=_kind: (
            unusable_home(s, kind),
            ["checkpoints", "import", "model.safetensors", "--name", "mine"],
        )[1],
        1,
        ("YODA_SR_HOME",),
        "writable folder",
        env={"YODA_SR_HOME": _home},
    )
CASES["--suffix of 300 characters"] = Case(upscale_with("--suffix", "x" * 300, *STEPS), 2, ("--suffix",), "at most")
CASES["upscale -o ''"] = Case(
    lambda s: (one_image(s), ["upscale", "in/a.png", "-o", "", "--model", "model.safetensors", *STEPS])[1],
    2,
    ("--out",),
    "empty",
)
CASES["a run log that is a folder"] = Case(
    lambda s: ((s / "out" / "yoda-sr-upscale.jsonl").mkdir(parents=True), upscale_with(*STEPS)(s))[1],
    2,
    ("yoda-sr-upscale.jsonl",),
    "remove or rename",
    out="out",
)
CASES["sample -o an existing folder with --overwrite"] = Case(
    lambda s: (one_image(s), ["sample", "-o", "in", "--overwrite"])[1], 2, ("--out", "in"), "name a file"
)


@pytest.mark.parametrize("command", ["upscale", "checkpoints list"])
@pytest.mark.parametrize("kind", sorted(UNUSABLE_HOMES))
def test_unusable_home_is_not_needed(command, kind, tmp_path, monkeypatch, capsys):
    """The embedded default and the list need no store: a YODA_SR_HOME that is a file is no store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("YODA_SR_HOME", unusable_home(tmp_path, kind))
    one_image(tmp_path)
    args = ["upscale", "in/a.png", "-o", "a.png", "--steps", "1"] if command == "upscale" else command.split()
    assert cli(*args) == 0, capsys.readouterr().err
    assert "yoda-srdiff-x4" in capsys.readouterr().out or command == "upscale"


def test_sample_writes_what_its_name_says(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("sample", "-o", "new/folder/x.jpg") == 0
    with Image.open(tmp_path / "new" / "folder" / "x.jpg") as image:
        assert image.format == "JPEG"
    assert cli("sample", "-o", "x.gif") == 2
    assert not (tmp_path / "x.gif").exists()


def full_disk(monkeypatch) -> None:
    """Every fsync reports a full disk (ENOSPC), as a full filesystem does on its last write."""
    import errno

    def fsync(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (root only; skipped where it cannot be mounted)."""
    import subprocess

    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path, leave: int) -> None:
    """Fill ``folder``'s filesystem, leaving about ``leave`` bytes."""
    free = shutil.disk_usage(folder).free
    (folder / "filler").write_bytes(os.urandom(max(free - leave, 0)))


def no_debris(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".yoda-tmp" in p.name or ".yoda-claim" in p.name]


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("yoda-sr: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_upscale_on_a_full_disk_injected(tmp_path, model_bytes, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(model_bytes)
    one_image(tmp_path)
    full_disk(monkeypatch)
    assert cli("upscale", "in", "-o", "out", "--model", "model.safetensors", *STEPS) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "No space left" in line and "a.png" in line, line
    assert no_debris(tmp_path) == [] and not (tmp_path / "out" / "a.png").exists()


@pytest.mark.parametrize("command", ["upscale", "import", "train"])
def test_full_tmpfs(command, small_tmpfs, tmp_path, model_bytes, monkeypatch, capsys):
    """A real full filesystem: one line naming the file and the fix, exit 1, no claim or temporary left."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("YODA_SR_HOME", str(small_tmpfs / "home"))
    (tmp_path / "model.safetensors").write_bytes(model_bytes)
    one_image(tmp_path)
    photos(tmp_path)
    out = small_tmpfs / "out"
    out.mkdir()
    fill(small_tmpfs, {"upscale": 2048, "import": 16384, "train": 100_000}[command])
    args = {
        "upscale": ["upscale", "in", "-o", out, "--model", "model.safetensors", *STEPS],
        "import": ["checkpoints", "import", "model.safetensors", "--name", "mine"],
        "train": ["train", "--data", "photos", "--out", out / "run", *RUN, "--iterations", "2", "--val-every", "2"],
    }[command]
    assert cli(*args) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "No space left" in line and str(small_tmpfs) in line, line
    assert command != "train" or "last.pt" in line, line  # torch.save's own error, told as the full disk
    assert no_debris(small_tmpfs) == []
    assert [p for p in out.rglob("*") if p.is_file() and p.stat().st_size == 0] == []


# --- late checks made early ---------------------------------------------------------------------------


def rgba_image(sandbox: Path) -> None:
    (sandbox / "in").mkdir()
    Image.fromarray(np.dstack([photo("astronaut")[:24, :32], np.full((24, 32), 128, np.uint8)])).save(
        sandbox / "in" / "a.png"
    )


EARLY = {
    "--block 10^30": Case(upscale_with("--block", 10**30, *STEPS), 2, ("--block",), "at most"),
    "--eta inf": Case(upscale_with("--eta", "inf", *STEPS), 2, ("--eta",), "finite"),
    "--max-pixels 0": Case(upscale_with("--max-pixels", "0", *STEPS), 2, ("--max-pixels",), "at least 1", out="out"),
    "--max-pixels -1": Case(upscale_with("--max-pixels", "-1", *STEPS), 2, ("--max-pixels",), "at least 1", out="out"),
    "evaluate --attention dino-resnet50 without weights": Case(
        lambda s: (
            (one_image(s), ["evaluate", "--data", "in", "--model", "model.safetensors", "--attention"])[1]
            + ["dino-resnet50", "-o", "eval"]
        ),
        2,
        ("dino-resnet50",),
        "checkpoints download",
        out="eval",
    ),
    "alpha input to a JPEG output": Case(
        lambda s: (rgba_image(s), ["upscale", "in/a.png", "-o", "out.jpg", "--model", "model.safetensors", *STEPS])[1],
        1,
        ("out.jpg",),
        "transparency",
    ),
}
CASES.update(EARLY)


@pytest.mark.parametrize("label", sorted(EARLY))
def test_refused_before_any_model_call(label, tmp_path, model_bytes, monkeypatch, capsys):
    from yoda_sr.api import Upscaler

    def never(*args, **kwargs):
        raise AssertionError("the model ran")

    monkeypatch.setattr(Upscaler, "upscale_batch", never)
    monkeypatch.setattr(Upscaler, "upscale", never)
    sweep(EARLY[label], tmp_path, model_bytes, monkeypatch, capsys)


# --- claims across hosts, long and multi-byte names ---------------------------------------------------


def foreign_claim(output: Path, host: str, pid: int, age: float) -> Path:
    from yoda_sr.fsutil import claim_path

    path = claim_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{host} {pid}\n")
    stamp = path.stat().st_mtime - age
    os.utime(path, (stamp, stamp))
    return path


@pytest.mark.parametrize(
    "owner, age, taken",
    [
        ("another host, fresh", 0.0, False),
        ("another host, without a heartbeat for 11 minutes", 660.0, True),
        ("this host, an unrelated live pid, no heartbeat", 660.0, True),
        ("this host, a dead pid", 0.0, True),
    ],
)
def test_claims_across_hosts(owner, age, taken, tmp_path):
    import socket

    from yoda_sr.fsutil import claim, release

    host = socket.gethostname() if "this host" in owner else "restarted-container-7f3a"
    pid = 1 if "live" in owner or "another" in owner else 2**22 + 12345
    target = tmp_path / "out.png"
    foreign_claim(target, host, pid, age)
    held = claim(target)
    assert (held is not None) == taken
    if held is not None:
        assert held.read_text().split() == [socket.gethostname(), str(os.getpid())]
        release(held)


def test_claims_carry_a_heartbeat(tmp_path, monkeypatch):
    import time

    from yoda_sr import fsutil

    monkeypatch.setattr(fsutil, "HEARTBEAT_SECONDS", 0.05)
    monkeypatch.setattr(fsutil, "_HEARTBEAT", fsutil._Heartbeat())
    held = fsutil.claim(tmp_path / "out.png")
    assert held is not None
    os.utime(held, (0, 0))
    deadline = time.time() + 5
    while held.stat().st_mtime < time.time() - 60 and time.time() < deadline:
        time.sleep(0.02)
    assert held.stat().st_mtime > time.time() - 60  # refreshed while held
    fsutil.release(held)
    assert not held.exists()


def test_a_busy_image_is_said_to_be_not_done(tmp_path, model_bytes, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(model_bytes)
    one_image(tmp_path)
    foreign_claim(tmp_path / "out" / "a.png", "restarted-container-7f3a", 1, 0.0)
    assert cli("upscale", "in", "-o", "out", "--model", "model.safetensors", *STEPS, "--quiet") == 0
    assert "1 image(s) not upscaled: another run holds their claims" in capsys.readouterr().err


def test_long_names_keep_apart_within_255_bytes(tmp_path):
    from yoda_sr.fsutil import claim_path, temporary_path

    first, second = ("é" * 100 + tail + ".png" for tail in ("-one", "-two"))
    assert claim_path(tmp_path / first) != claim_path(tmp_path / second)
    for path in (claim_path(tmp_path / first), temporary_path(tmp_path / first)):
        assert len(os.fsencode(path.name)) <= 255
        path.write_bytes(b"")  # a name the filesystem takes


def test_long_multibyte_names_upscale_in_one_batch(tmp_path, model_bytes, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(model_bytes)
    (tmp_path / "in").mkdir()
    names = ["\U0001d538" * 60 + ".png", "\U0001d538" * 59 + "b.png", "x" * 200 + "1.png", "x" * 200 + "2.png"]
    for name in names:
        (tmp_path / "in" / name).write_bytes(png_bytes())
    assert cli("upscale", "in", "-o", "out", "--model", "model.safetensors", *STEPS, "--batch-size", "2") == 0, (
        capsys.readouterr().err
    )
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == sorted(names)
    assert no_debris(tmp_path) == []


def same_stem_images(sandbox: Path) -> list[object]:
    (sandbox / "in").mkdir()
    (sandbox / "in" / "a.png").write_bytes(png_bytes())
    (sandbox / "in" / "a.jpg").write_bytes(png_bytes(format="JPEG"))
    return ["upscale", "in", "-o", "out", "--model", "model.safetensors", *STEPS, "--save-attention"]


def test_save_attention_keeps_maps_of_same_stem_outputs_apart(tmp_path, model_bytes, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(model_bytes)
    assert cli(*same_stem_images(tmp_path)) == 0, capsys.readouterr().err
    names = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.endswith(".attention.png"))
    assert names == ["a.attention.png", "a.jpg.attention.png"]


def linked_sub_folder(sandbox: Path) -> list[object]:
    (sandbox / "in" / "sub").mkdir(parents=True)
    (sandbox / "in" / "sub" / "a.png").write_bytes(png_bytes())
    (sandbox / "elsewhere").mkdir()
    (sandbox / "out").mkdir()
    (sandbox / "out" / "sub").symlink_to(sandbox / "elsewhere")
    return ["upscale", "in", "-r", "-o", "out", "--model", "model.safetensors", *STEPS]


CASES["-r into an output folder whose sub-folder links outside it"] = Case(
    linked_sub_folder, 2, ("--out", "elsewhere"), "remove the link", out="out"
)


@pytest.mark.parametrize("change", [("--block", "128"), ("--sparse", "off")])
def test_evaluate_resumed_with_other_sparse_settings_reuses_nothing(change, tmp_path, model_bytes, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(model_bytes)
    (tmp_path / "in").mkdir()
    Image.fromarray(photo("astronaut")[:64, :64]).save(tmp_path / "in" / "a.png")
    base = ["evaluate", "--data", "in", "--model", "model.safetensors", "--compare", "yoda", "-o", "eval", *STEPS]
    assert cli(*base, "--block", "64") == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["settings"]["block"] == 64 and summary["settings"]["sparse"] is True
    capsys.readouterr()
    assert cli(*base, *(change if change[0] == "--block" else (*change, "--block", "0"))) == 2
    line = one_error_line(capsys.readouterr().err)
    assert change[0].removeprefix("--") in line, line


USER_ENTRIES = {
    "named ../x": ('["../x"]', "", "a name is"),
    "with scale four": ("[mine]", 'scale = "four"\n', "scale must be an integer"),
    "with an embedded path out of the package": (
        "[mine]",
        "",
        "stays inside the package",
    ),
}


def user_registry(label: str) -> Callable[[Path], list[object]]:
    header, extra, _ = USER_ENTRIES[label]
    source = (
        'source = { kind = "embedded", path = "../../../etc/passwd" }'
        if "embedded" in label
        else 'source = { kind = "url", url = "http://127.0.0.1:9/x.safetensors" }'
    )

    def build(sandbox: Path) -> list[object]:
        (sandbox / "home").mkdir()
        (sandbox / "home" / "checkpoints.toml").write_text(
            f'{header}\nkind = "denoiser"\nformat = "safetensors"\ndescription = "d"\nlicence = "l"\npage = "p"\n'
            f"{extra}{source}\n"
        )
        return ["checkpoints", "list"]

    return build


for _label, (_, _, _advice) in USER_ENTRIES.items():
    CASES[f"checkpoints list with a user entry {_label}"] = Case(
        user_registry(_label), 1, ("checkpoints.toml",), _advice
    )

CASES["--tile 16 on a 48 px image"] = Case(
    lambda s: (
        (s / "in").mkdir(),
        Image.fromarray(photo("astronaut")[:48, :48]).save(s / "in" / "a.png"),
        ["upscale", "in", "-o", "out", "--model", "model.safetensors", *STEPS, "--tile", "16", "--tile-overlap", "8"],
    )[2],
    2,
    ("--tile",),
    "at least 64",
)


@pytest.mark.parametrize("stream", [{"stream": "off"}, {"tile": 0}])
def test_whole_sampling_beyond_the_memory_is_refused_with_the_option_that_fits(stream, tmp_path, model_bytes):
    from yoda_sr import Upscaler
    from yoda_sr.errors import SettingError
    from yoda_sr.settings import Settings

    (tmp_path / "model.safetensors").write_bytes(model_bytes)
    upscaler = Upscaler.from_pretrained(tmp_path / "model.safetensors", device="cpu")
    with pytest.raises(SettingError, match="GiB, more than the .* GiB there are; .*streams it in tiles") as raised:
        upscaler.upscale(photo("astronaut")[:24, :32], settings=Settings(steps=1, memory_budget=1000, **stream))
    assert raised.value.setting == next(iter(stream))


# --- the sweep over every case above ------------------------------------------------------------------


@pytest.mark.parametrize("label", sorted(CASES))
def test_hostile_input(label, tmp_path, model_bytes, monkeypatch, capsys):
    import safetensors.torch
    import torch

    parsed: list[int] = []
    parse = safetensors.torch.load

    def counting(data: bytes, *args, **kwargs):  # the real parser, counted
        parsed.append(len(data))
        return parse(data, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "load", counting)
    before = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    sweep(CASES[label], tmp_path, model_bytes, monkeypatch, capsys)
    if "metadata" in label:  # refused from the header: not one weight was parsed (nor reached a GPU)
        assert parsed == [], parsed
        if before is not None:
            assert before == torch.cuda.max_memory_allocated()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "keys missing"])
def test_damaged_run_state(damage, tmp_path, model_bytes, one_step_run, monkeypatch, capsys):
    case = Case(damaged_state(damage, one_step_run), 1, ("last.pt",), "remove|start|again|delete")
    sweep(case, tmp_path, model_bytes, monkeypatch, capsys)


def test_attention_beyond_the_memory_is_refused_with_the_scale_that_fits(tmp_path, monkeypatch, capsys):
    from yoda_sr.jobs import attention_files

    def never(*args, **kwargs):
        raise AssertionError("the map was computed")

    monkeypatch.chdir(tmp_path)
    one_image(tmp_path)
    monkeypatch.setattr(attention_files, "memory_limit", lambda: 64 * 2**20)
    monkeypatch.setattr("yoda_sr.attention.compute_attention", never)
    code = cli("attention", "in/a.png", "--method", "edge", "--scale", "100", "--out", "maps/")
    line = one_error_line(capsys.readouterr().err)
    assert code != 0 and "3200x2400 map needs about 0.3 GiB" in line and re.search(r"--scale [\d.]+ or less", line)
    assert not list((tmp_path / "maps").glob("*.png")) if (tmp_path / "maps").exists() else True


# --- an address-space cap (ulimit -v), for real ------------------------------------------------------


def capped_cli(cap: int, *args: str, cwd: Path) -> tuple[int, str]:
    """``yoda-sr args`` in a child process whose address space is capped at ``cap`` bytes."""
    import resource
    import subprocess
    import sys

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    script = "import sys; from yoda_sr.cli import main; sys.argv[0] = 'yoda-sr'; main()"
    done = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=cwd, preexec_fn=limit, capture_output=True, text=True, timeout=300
    )
    return done.returncode, done.stderr


def mapped_after_loading() -> int:
    """The address space a process maps once PyTorch and the attention package are loaded."""
    import subprocess
    import sys

    script = (
        "import yoda_sr.attention, yoda_sr.cli\n"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmSize')][0])"
    )
    return int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout) * 1024


def test_an_address_space_cap_is_counted_beyond_what_is_mapped_and_names_the_scale_that_fits(tmp_path):
    """Under ``ulimit -v`` the map that does not fit in what the cap leaves (PyTorch's libraries map
    gigabytes of it) is refused before it is computed, naming a scale; that scale then runs under the
    same cap."""
    Image.fromarray(photo("astronaut")).save(tmp_path / "a.png")  # 512 px: x60 is a 2.6 GiB map
    cap = mapped_after_loading() + (1 << 30) + (1 << 29)
    code, err = capped_cli(
        cap, "attention", "a.png", "--method", "edge", "--scale", "60", "-o", "big.png", cwd=tmp_path
    )
    line = one_error_line(err)
    assert code != 0 and "map needs about" in line and not (tmp_path / "big.png").exists()
    fits = re.search(r"--scale ([\d.]+) or less", line)
    assert fits is not None and float(fits[1]) < 60, line
    code, err = capped_cli(
        cap, "attention", "a.png", "--method", "edge", "--scale", fits[1], "-o", "ok.png", cwd=tmp_path
    )
    assert code == 0, err
    assert (tmp_path / "ok.png").exists()


def test_a_cap_too_small_to_load_pytorch_is_one_line(tmp_path):
    Image.fromarray(photo("astronaut")).save(tmp_path / "a.png")
    code, err = capped_cli(400 << 20, "attention", "a.png", "--method", "edge", "-o", "map.png", cwd=tmp_path)
    line = one_error_line(err)
    assert code == 1 and ("cannot load a library" in line or "out of memory" in line), line
    assert not (tmp_path / "map.png").exists()
