"""Starting the page: offline and private by default, its temporary files removed when it stops.

Before Gradio is imported, its analytics, version check and Hugging Face telemetry are turned off
and its temporary folder is set to one of ours. It listens on 127.0.0.1 unless told otherwise (a
warning says when the address is not a loopback one), makes no share link unless asked, runs no
Node server, records no run history and serves no monitoring page.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from ..errors import SettingError, setting
from .models import Models
from .offline import load_gradio


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost``."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_size(text: str) -> int:
    """An upload limit: bytes, or a number with kb, mb or gb (powers of 1024)."""
    value = text.strip().lower().removesuffix("b")
    factor = 1
    for unit, size in (("k", 1024), ("m", 1024**2), ("g", 1024**3)):
        if value.endswith(unit):
            value, factor = value[:-1], size
            break
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number > 0:
        raise SettingError("max_upload", f"must be a size such as 50mb, got {text!r}")
    return int(number * factor)


@dataclass
class Options:
    """What `yoda-sr web` was asked for."""

    host: str = "127.0.0.1"
    port: int = 7860
    models: Sequence[str] = ()
    device: str = "auto"
    dtype: str = "auto"
    share: bool = False
    max_upload: int = 50 * 1024**2
    max_pixels: int | None = None


def serve(options: Options, note: Callable[[str], None], ready: Callable[[str], None] | None = None) -> None:
    """Run the page until SIGINT or SIGTERM; then stop the server and remove the temporary folder."""
    if not 1 <= options.port <= 65535:
        raise SettingError("port", f"must be 1..65535, got {options.port}")
    if options.max_pixels is not None and options.max_pixels < 1:
        raise SettingError("max_pixels", f"must be a positive number of pixels, got {options.max_pixels}")
    if not is_loopback(options.host):
        note(f"warning: listening on {options.host}, not only on this machine; anyone who can reach it can use it")
    root = Path(tempfile.mkdtemp(prefix="yoda-sr-web-"))
    os.environ["GRADIO_TEMP_DIR"] = str(root / "gradio")
    try:
        _serve(options, root, note, ready)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _serve(options: Options, root: Path, note: Callable[[str], None], ready: Callable[[str], None] | None) -> None:
    from .app import build
    from .jobs import Jobs
    from .library import DEFAULT_MAX_PIXELS

    gr = load_gradio()
    models = Models(options.models, device=options.device, dtype=options.dtype)
    upscaler = models.get(models.default)  # fails here, in one line, if the default model cannot load
    jobs = Jobs(models, root / "jobs", options.max_pixels or DEFAULT_MAX_PIXELS, note)
    blocks = build(jobs)
    blocks.queue(default_concurrency_limit=1, api_open=False)
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        url, share_url = _launch(blocks, gr, options)
        note(f"{upscaler.name} on {upscaler.device}; serving {url} (Ctrl+C stops)")
        if share_url:
            note(f"public share link: {share_url}")
        if ready is not None:
            ready(url)
        while not stopping.wait(0.5):
            pass
        note("stopping")
    finally:
        blocks.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _launch(blocks: Any, gr: Any, options: Options) -> tuple[str, str | None]:
    """Start the server thread; (local URL, share URL or None). A port in use is one line."""
    try:
        _, url, share_url = blocks.launch(
            server_name=options.host,
            server_port=options.port,
            share=options.share,
            prevent_thread_lock=True,
            quiet=True,
            max_file_size=options.max_upload,
            ssr_mode=False,
            pwa=False,
            mcp_server=False,
            enable_monitoring=False,
            run_history=False,
            footer_links=["api"],
            show_error=False,
            theme=gr.themes.Default(
                font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
            ),
        )
    except (OSError, gr.exceptions.ServerFailedToStartError):
        raise SettingError(
            "port",
            f"cannot listen on {options.host}:{options.port} (in use, or not an address of this machine); "
            f"choose another {setting('port')} or {setting('host')}",
        ) from None
    return str(url), share_url
