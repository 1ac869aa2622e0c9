"""`yoda-sr attention`: options in, one line per map out; the work is ``attention_files.AttentionMaps``."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import UsageError
from ..files import IMAGE_EXTENSIONS
from .common import debugging, notes, report_error


def attention(
    ctx: typer.Context,
    images: list[Path] = typer.Argument(
        ..., metavar="IMAGE", show_default=False, help="Image files, or folders of images."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        metavar="FILE|DIR",
        show_default=False,
        help="A .png file for a single image, or a folder (created) for many. "
        "Default: <stem>.attention.png beside each input.",
    ),
    method: str | None = typer.Option(
        None,
        "--method",
        "-m",
        metavar="METHOD",
        show_default=False,
        help="dino-resnet50 (default), dino-vits8, dino-vits16 (these need weights), "
        "or the weight-free gaussian, edge, sift, none.",
    ),
    heads: str = typer.Option("max", "--heads", metavar="max|mean|K", help="How DINO heads combine."),
    weights: Path | None = typer.Option(
        None, "--weights", metavar="FILE", show_default=False, help="DINO weights (.safetensors)."
    ),
    scale: float = typer.Option(
        1.0, "--scale", metavar="S", help="The map's size is the image's times S (the SR scale)."
    ),
    overlay: bool = typer.Option(False, "--overlay", help="Blend the heat map over the image."),
    timeline: int | None = typer.Option(
        None,
        "--timeline",
        metavar="N",
        show_default=False,
        help="Also write <stem>.timeline.png: the mask M(t) at N steps and the active area vs t.",
    ),
    lower_bound: float = typer.Option(0.2, "--lower-bound", metavar="L", help="YODA's lower bound l, in [0, 1]."),
    steps: int = typer.Option(500, "--steps", metavar="T", help="Training steps T of the mask M(t)."),
    npy: bool = typer.Option(False, "--npy", help="Also write the map as <stem>.attention.npy (float32)."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Look into sub-folders too."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    device: str = typer.Option("auto", "--device", metavar="auto|cpu|cuda", help="Where to compute."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print errors only."),
) -> None:
    """Compute YODA attention maps A and show the time-dependent mask M(t) as images.

    The map is computed from each image as the LR input, at the image's size times --scale.
    Prints one line per image: the map size and the pixel-update fraction mean(min(1, A + l)).
    """
    from ..attention import MissingWeightsError
    from ..attention_files import OWN_ENDINGS, AttentionMaps, Mapped, map_outputs
    from ..batch import Batch, Hints, Item, each

    maps = AttentionMaps(
        method,
        heads=heads,
        weights=weights,
        scale=scale,
        overlay=overlay,
        timeline=timeline,
        lower_bound=lower_bound,
        steps=steps,
        device=device,
    )
    if out is not None and not out.is_dir():
        if out.suffix.lower() != ".png" and (out.suffix.lower() in (*IMAGE_EXTENSIONS, ".npy") or out.is_file()):
            raise UsageError(f"--out {out}: give a .png file (one image) or a folder")
        if out.suffix.lower() == ".png" and (len(images) != 1 or images[0].is_dir()):
            raise UsageError("--out FILE takes a single image; give a folder (--out DIR) for several")
    if weights is not None and not maps.uses_weights:
        notes(quiet)(f"--weights is not used by --method {maps.method}")
    hints = Hints(
        exists="use --overwrite", kept="use --overwrite to replace", collision="rename one or run them separately"
    )
    batch: Batch[Item] = Batch(
        overwrite=overwrite,
        report=report_error,
        note=notes(quiet),
        hints=hints,
        reraise=debugging(ctx),
        fatal=(MissingWeightsError,),
    )
    found = batch.find(images, recursive, ignore_endings=OWN_ENDINGS)
    items = [
        Item(image, (folder / image.name).as_posix(), map_outputs(image, folder, out, timeline is not None, npy))
        for image, folder in found.images
    ]

    def show(item: Item, mapped: Mapped) -> None:
        if not quiet:
            (height, width), fraction = mapped.size, mapped.fraction
            typer.echo(
                f"{item.image}: {maps.method} map {width}x{height}, pixel-update fraction {fraction:.3f} "
                f"(l = {lower_bound:g}) -> {', '.join(map(str, item.pending))}"
            )

    if batch.run(batch.plan(items), each(maps), done=show).failed:
        raise typer.Exit(1)
