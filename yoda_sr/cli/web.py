"""`yoda-sr web`: serve the local page (and its API) until Ctrl+C; the work is ``yoda_sr.web``."""

from __future__ import annotations

import typer

from .common import note


def web(
    host: str = typer.Option(
        "127.0.0.1", "--host", metavar="ADDRESS", help="Address to listen on (default: this machine only)."
    ),
    port: int = typer.Option(7860, "--port", metavar="N", help="TCP port."),
    model: list[str] = typer.Option(
        [],
        "--model",
        "-m",
        metavar="NAME|PATH",
        help="Models to offer besides the installed and embedded ones (repeatable; the first is the default).",
    ),
    device: str = typer.Option("auto", "--device", metavar="auto|cpu|cuda[:i]|mps", help="Where to compute."),
    dtype: str = typer.Option("auto", "--dtype", metavar="auto|fp32|fp16|bf16", help="Model precision."),
    share: bool = typer.Option(False, "--share", help="Also make a public Gradio share link (off by default)."),
    max_upload: str = typer.Option("50mb", "--max-upload", metavar="SIZE", help="Largest upload, e.g. 50mb."),
    max_pixels: int | None = typer.Option(
        None, "--max-pixels", metavar="N", help="Largest input (width x height) to decode; raises the bomb guard."
    ),
) -> None:
    """Serve a local web page to upscale, compare and inspect (and an API endpoint, `upscale`)."""
    from ..web.server import Options, parse_size, serve

    options = Options(
        host=host,
        port=port,
        models=model,
        device=device,
        dtype=dtype,
        share=share,
        max_upload=parse_size(max_upload),
        max_pixels=max_pixels,
    )
    serve(options, note)
