"""`yoda-sr sample`: write the bundled sample photo to a file."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import UsageError

SAMPLE = "samples/astronaut.png"
"""A 128 x 128 crop of NASA's public-domain astronaut photo (via scikit-image), shipped in the package."""


def sample(
    out: Path = typer.Option(Path("yoda-sr-sample.png"), "--out", "-o", metavar="FILE", help="Where to write it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
) -> None:
    """Write the bundled sample photo (public domain) to a file, to try `yoda-sr upscale` on."""
    from importlib import resources

    from ..fsutil import atomic_write_bytes

    if out.exists() and not overwrite:
        raise UsageError(f"{out} exists; pass --overwrite or choose another --out")
    data = (resources.files("yoda_sr") / SAMPLE).read_bytes()
    atomic_write_bytes(out, data)
    typer.echo(str(out))
