"""`yoda-sr sample`: write the bundled sample photo to a file."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import UsageError, output_path

SAMPLE = "samples/astronaut.png"
"""A 128 x 128 crop of NASA's public-domain astronaut photo (via scikit-image), shipped in the package."""


def sample(
    out: Path = typer.Option(
        Path("yoda-sr-sample.png"), "--out", "-o", metavar="FILE", parser=output_path, help="Where to write it."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
) -> None:
    """Write the bundled sample photo (public domain) to a file, to try `yoda-sr upscale` on."""
    import io
    from importlib import resources

    from PIL import Image

    from ..fsutil import atomic_write_bytes
    from ..jobs.upscaling import PILLOW_FORMATS

    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; name a file (in it: {out / 'yoda-sr-sample.png'})")
    fmt = PILLOW_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise UsageError(f"--out {out}: name it with one of {', '.join(sorted(PILLOW_FORMATS))}")
    if out.exists() and not overwrite:
        raise UsageError(f"{out} exists; pass --overwrite or choose another --out")
    data = (resources.files("yoda_sr") / SAMPLE).read_bytes()
    if fmt != "PNG":  # the file holds what its name says
        buffer = io.BytesIO()
        Image.open(io.BytesIO(data)).convert("RGB").save(buffer, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        data = buffer.getvalue()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, data)
    typer.echo(str(out))
