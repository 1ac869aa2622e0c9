"""`yoda-sr web` in a child process for the web tests: started on a free loopback port, watched for any
connection to (or name lookup of) a host that is not this machine, and stopped with checks that it
listened on loopback only, exited cleanly, left no process behind and removed its temporary files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

import yoda_sr

from conftest import free_port

ROOT = Path(yoda_sr.__file__).resolve().parents[1]
SAMPLE = Path(yoda_sr.__file__).parent / "samples" / "astronaut.png"
RUNNER = """
import ipaddress, sys

log = open(sys.argv[1], "a", buffering=1)


def local(host):
    host = host.decode() if isinstance(host, bytes) else str(host)
    if host.lower() in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def hook(event, args):
    if event == "socket.connect" and isinstance(args[1], tuple) and not local(args[1][0]):
        log.write(f"connect {args[1]!r}\\n")
    elif event == "socket.getaddrinfo" and args[0] is not None and not local(args[0]):
        log.write(f"lookup {args[0]!r}\\n")


sys.addaudithook(hook)
from yoda_sr.cli import main

main(sys.argv[2:])
"""
"""Runs `yoda-sr` with an audit hook that logs every connection or lookup of a host off this machine."""


def crop(path: Path, box: tuple[int, int, int, int] = (40, 30, 72, 62)) -> Path:
    """A crop of the bundled sample photo saved as ``path`` (small, so tests stay fast)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.open(SAMPLE).crop(box).save(path)
    return path


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


@dataclass
class Server:
    """A running `yoda-sr web`."""

    process: subprocess.Popen[str]
    port: int
    tmp: Path
    netlog: Path
    stderr: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def descendants(self) -> set[int]:
        """Processes started by the server (children, grandchildren, ...)."""
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                parents[int(entry.name)] = int(fields[1])
        found, frontier = set(), {self.process.pid}
        while frontier:
            frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
            found |= frontier
        return found

    def listening(self) -> set[tuple[str, int]]:
        """(address, port) of every TCP socket the server's processes listen on, from /proc/net/tcp{,6}."""
        inodes: set[str] = set()
        for pid in {self.process.pid, *self.descendants()}:
            try:
                links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
            except OSError:
                continue
            inodes |= {link[8:-1] for link in links if link.startswith("socket:[")}
        found = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    address, port = fields[1].split(":")
                    found.add((_address(address), int(port, 16)))
        return found

    def outside_traffic(self) -> list[str]:
        return self.netlog.read_text().splitlines() if self.netlog.exists() else []

    def stop(self) -> int:
        """SIGINT, as Ctrl+C; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError("the server did not stop within 60 s of SIGINT") from None


def _address(hex_address: str) -> str:
    """/proc/net/tcp's little-endian hex address as text (IPv4, or IPv6 in 4-byte words)."""
    import ipaddress

    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def start(tmp: Path, *arguments: str, timeout: float = 180) -> Server:
    """Start `yoda-sr web` on a free port with a private TMPDIR and YODA_SR_HOME; wait until it serves."""
    (tmp / "tmp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    netlog = tmp / "outside.log"
    env = {
        **os.environ,
        "TMPDIR": str(tmp / "tmp"),
        "YODA_SR_HOME": str(tmp / "home"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-c", RUNNER, str(netlog), "web", "--port", str(port), *arguments]
    process = subprocess.Popen(
        command,
        env=env,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # Ctrl+C works as from a shell
    )
    server = Server(process, port, tmp, netlog)
    serving = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            server.stderr.append(line.rstrip("\n"))
            if "serving http://" in line:
                serving.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not serving.wait(0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop() if process.poll() is None else None
            raise AssertionError("yoda-sr web did not start:\n" + "\n".join(server.stderr[-30:]))
    return server


def raw_call(url: str, api_name: str, data: list[object], timeout: float = 60) -> dict:
    """Call an event through Gradio's queue with ``data`` as sent, bypassing gradio_client (which would
    upload a local file named in a file reference instead of sending the reference); the final message."""
    import json

    import httpx

    config = httpx.get(f"{url}config", timeout=timeout).json()
    fn_index = next(dep["id"] for dep in config["dependencies"] if dep.get("api_name") == api_name)
    session = f"test{time.monotonic_ns()}"
    body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None}
    httpx.post(f"{url}gradio_api/queue/join", json=body, timeout=timeout).raise_for_status()
    query = {"session_hash": session}
    with httpx.stream("GET", f"{url}gradio_api/queue/data", params=query, timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:") and (message := json.loads(line[5:])).get("msg") == "process_completed":
                return message
    raise AssertionError("the queue closed without completing the call")


def leftovers(server: Server) -> list[Path]:
    """The server's temporary folders still on disk (it removes them when it stops)."""
    return sorted((server.tmp / "tmp").glob("yoda-sr-web-*"))


def chrome_or_skip(downloads: Path, profile: Path):  # -> selenium WebDriver
    """Headless Chromium driven by Debian's chromedriver, kept off the network but for this machine.

    Without Chromium the test is skipped with the reason, except under CI (CI=true), where it fails."""
    import pytest

    missing = [path for path in ("/usr/bin/chromium", "/usr/bin/chromedriver") if not Path(path).exists()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package")
    if missing:
        reason = f"needs {', '.join(missing)} (apt-get install chromium chromium-driver; pip install selenium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser tests, but it lacks them: {reason}")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    for argument in (
        "--headless=new",
        f"--user-data-dir={profile}",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,"
        "CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions",
        "--no-first-run",
        "--no-default-browser-check",
        "--no-pings",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--window-size=1400,1700",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
