"""`upscale --engine ray` and ``upscale_on_ray`` on a Ray started here (127.0.0.1 only): the same bytes
as the plain CLI, a worker killed mid-image, re-runs, Ctrl-C, and Ray's sockets on loopback only.

One Ray for the module (2 CPUs, no dashboard, no usage report). Every process it starts inherits a
marker variable, which is how the tests find Ray's processes (to check their sockets, kill a worker,
and see that none is left).
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import yoda_sr
from yoda_sr.distributed import RayOptions, upscale_on_ray
from yoda_sr.distributed.cluster import import_ray, start_local
from yoda_sr.settings import Settings

from conftest import cli, photo, save_tiny_checkpoint

pytest.importorskip("ray")

MARK = "YODA_SR_TEST_RAY"


def marked(mark: str) -> list[int]:
    """Processes whose environment holds the marker (Ray's processes started under it)."""
    pids = []
    needle = f"{MARK}={mark}".encode()
    for name in os.listdir("/proc"):
        if name.isdecimal() and int(name) != os.getpid():
            try:
                with open(f"/proc/{name}/environ", "rb") as handle:
                    if needle in handle.read().split(b"\0"):
                        pids.append(int(name))
            except OSError:
                continue
    return pids


def title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    host = bytes.fromhex(text.split(":")[0])
    if len(host) == 4:
        return ipaddress.IPv4Address(host[::-1])
    address = ipaddress.IPv6Address(b"".join(host[i : i + 4][::-1] for i in range(0, 16, 4)))
    return address.ipv4_mapped or address


def inet_sockets(pids: list[int]) -> list[tuple[str, str, str]]:
    """(protocol, local address, remote address) of every IP socket these processes hold."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for protocol in ("tcp", "tcp6", "udp", "udp6"):
        with open(f"/proc/net/{protocol}") as handle:
            for line in handle.read().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    found.append((protocol, fields[1], fields[2]))
    return found


def not_on_loopback(pids: list[int]) -> list[str]:
    """Sockets bound, listening or connected to anything but loopback."""
    wrong = []
    for protocol, local, remote in inet_sockets(pids):
        remote_address = _address(remote)
        if not _address(local).is_loopback or not (remote_address.is_loopback or remote_address.is_unspecified):
            wrong.append(f"{protocol} {_address(local)} -> {remote_address}")
    return wrong


def wait_until_gone(mark: str, timeout: float = 30) -> list[str]:
    deadline = time.time() + timeout
    while time.time() < deadline and marked(mark):
        time.sleep(0.2)
    return [f"{pid} {title(pid)}" for pid in marked(mark)]


@pytest.fixture(scope="module")
def ray_cluster():
    mark = uuid.uuid4().hex
    os.environ[MARK] = mark
    ray = import_ray(local=True)
    start_local(ray, num_cpus=2)  # ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        yield ray, mark
    finally:
        ray.shutdown()
        del os.environ[MARK]
        assert wait_until_gone(mark) == []


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def mixed_folder(folder: Path) -> None:
    """RGB, RGBA, 16-bit grey, a JPEG with EXIF and an ICC profile, in a sub-folder too."""
    image = photo("astronaut")
    rgb = np.ascontiguousarray(image[100:124, 180:212])
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(rgb).save(folder / "rgb.png")
    alpha = np.linspace(0, 255, rgb.shape[1], dtype=np.uint8)[None].repeat(rgb.shape[0], 0)
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(folder / "sub" / "rgba.png")
    grey16 = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey16).save(folder / "grey16.png")
    exif = Image.Exif()
    exif[0x010F] = "yoda-sr test"
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(np.ascontiguousarray(image[300:324, 40:72])).save(
        folder / "sub" / "photo.jpg", exif=exif.tobytes(), icc_profile=icc, quality=95
    )


def one_thread_cli(*args: object) -> int:
    """The plain CLI at one torch thread, as each Ray worker of one CPU runs: the same bytes are expected
    at the same thread count (across thread counts float sums run in another order: a level at a few
    pixels for the default model)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return cli(*args)
    finally:
        torch.set_num_threads(threads)


def outputs(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.endswith(".jsonl")
    }


def test_ray_writes_the_bytes_the_cli_writes(tmp_path, model_file, ray_cluster):
    ray, _ = ray_cluster
    folder = tmp_path / "in"
    mixed_folder(folder)
    reference = tmp_path / "reference"
    assert one_thread_cli("upscale", folder, "-r", "-o", reference, "--model", model_file, "--steps", "2", "-q") == 0
    # the CLI as a user runs it, joining this Ray by its address
    out = tmp_path / "ray"
    address = ray.get_runtime_context().gcs_address
    assert address.startswith("127.0.0.1:")
    command = [sys.executable, "-m", "yoda_sr", "upscale", folder, "-r", "-o", out, "--model", model_file]
    command += ["--steps", "2", "--engine", "ray", "--ray-address", address, "--workers", "2", "--json"]
    # as from a user's shell: without the variable that keeps Ray on loopback (the driver sets it for a
    # loopback address; otherwise Ray would trade 127.0.0.1 for this machine's network address)
    environ = {name: value for name, value in os.environ.items() if name != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    done = subprocess.run(
        list(map(str, command)), capture_output=True, text=True, timeout=300, check=False, env=environ
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert outputs(out) == outputs(reference) and len(outputs(out)) == 4
    records = [json.loads(line) for line in done.stdout.splitlines()]
    logged = [json.loads(line) for line in (out / "yoda-sr-upscale.jsonl").read_text().splitlines()]
    assert len(logged) == 4 and sorted(r["output"] for r in logged) == sorted(r["output"] for r in records)
    plain = {Path(r["output"]).name: r["seed"] for r in map(json.loads, open(reference / "yoda-sr-upscale.jsonl"))}
    assert {Path(r["output"]).name: r["seed"] for r in logged} == plain  # seeds from the paths
    with Image.open(out / "sub" / "photo.jpg") as written:
        assert written.info.get("icc_profile") and written.getexif()[0x010F] == "yoda-sr test"
    with Image.open(out / "grey16.png") as written:
        assert written.mode == "I;16"
    with Image.open(out / "sub" / "rgba.png") as written:
        assert written.mode == "RGBA"


def busy_worker(mark: str, deadline: float) -> int | None:
    while time.time() < deadline:
        for pid in marked(mark):
            if title(pid).startswith("ray::UpscaleWorker.upscale"):
                return pid
        time.sleep(0.01)
    return None


def test_a_killed_worker_is_replaced_and_every_output_written_once(tmp_path, model_file, ray_cluster):
    _, mark = ray_cluster
    folder = tmp_path / "in"
    folder.mkdir()
    image = photo("chelsea")
    for index in range(5):
        crop = np.ascontiguousarray(image[40 * index : 40 * index + 48, 60 * index : 60 * index + 48])
        Image.fromarray(crop).save(folder / f"cat{index}.png")
    reference = tmp_path / "reference"
    assert one_thread_cli("upscale", folder, "-o", reference, "--model", model_file, "--steps", "3", "-q") == 0
    seen: dict[str, object] = {}

    def kill_one() -> None:
        pid = busy_worker(mark, time.time() + 120)
        if pid is not None:
            seen["sockets"] = not_on_loopback([os.getpid(), *marked(mark)])  # Ray, mid-run
            os.kill(pid, signal.SIGKILL)
            seen["killed"] = pid

    killer = threading.Thread(target=kill_one)
    killer.start()
    out = tmp_path / "ray"
    notes: list[str] = []
    settings = Settings(steps=3)
    options = RayOptions(workers=2)
    report = upscale_on_ray([folder], out, settings, model=str(model_file), options=options, note=notes.append)
    killer.join()

    assert "killed" in seen, "no worker was seen at work"
    assert seen["sockets"] == [], seen["sockets"]
    assert report.failures == [] and report.tally.failed == 0
    assert report.retried >= 1 and report.replaced >= 1, (report, notes)
    assert report.tally.done + report.tally.skipped == 5
    assert all(info["module"] == yoda_sr.__file__ for info in report.workers)  # this tree, not another
    assert sorted(p.name for p in out.iterdir()) == [*(f"cat{i}.png" for i in range(5)), "yoda-sr-upscale.jsonl"]
    logged = [json.loads(line)["output"] for line in (out / "yoda-sr-upscale.jsonl").read_text().splitlines()]
    assert len(logged) == len(set(logged)) == report.tally.done  # once each
    assert outputs(out) == outputs(reference)
    # a re-run skips everything; nothing is left behind
    again = upscale_on_ray([folder], out, settings, model=str(model_file), options=RayOptions(workers=1))
    assert (again.tally.done, again.tally.skipped, again.tally.failed) == (0, 5, 0)
    assert again.workers == []  # nothing to do: no worker started
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_ctrl_c_stops_the_job_and_leaves_no_temporary_file_or_process(tmp_path, model_file):
    folder = tmp_path / "in"
    folder.mkdir()
    image = photo("coffee")
    for index in range(24):  # enough work that the signal comes mid-job, however loaded the machine
        top, left = 12 * index, 20 * index
        crop = np.ascontiguousarray(image[top : top + 64, left : left + 64])
        Image.fromarray(crop).save(folder / f"cup{index}.png")
    out = tmp_path / "out"
    mark = uuid.uuid4().hex
    command = [sys.executable, "-m", "yoda_sr", "upscale", folder, "-o", out, "--model", model_file]
    command += ["--steps", "16", "--engine", "ray", "--workers", "1", "-q"]  # starts its own Ray, here
    process = subprocess.Popen(
        list(map(str, command)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, MARK: mark},
        # as from a shell: Ctrl-C's default action (a pytest-xdist worker ignores SIGINT, and an ignored
        # signal stays ignored across exec, so Python would install no KeyboardInterrupt handler)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert busy_worker(mark, time.time() + 180) is not None, "no worker was seen at work"
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the driver and Ray's services
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr[-3000:]
    assert "yoda-sr: interrupted" in stderr and "Traceback" not in stderr
    assert len(list(out.glob("*.png"))) < 24  # it stopped mid-job
    assert not [p.name for p in out.rglob(".*")]  # no temporary file, no claim
    assert wait_until_gone(mark) == []  # no Ray process left
