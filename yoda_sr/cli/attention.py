"""`yoda-sr attention`: options in, one line per map out; the work is ``attention_files.AttentionMaps``."""

from __future__ import annotations

from pathlib import Path

import typer

from ..jobs.files import IMAGE_EXTENSIONS
from .common import UsageError, clean_option, debugging, notes, output_path, report_error


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
        parser=output_path,
        show_default=False,
        help="A .png file for a single image, or a folder (created) for many. "
        "Default: <stem>.<method>.attention.png beside each input (face.sift.attention.png).",
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        metavar="NAME|PATH",
        show_default=False,
        help="Show what `upscale --model` would use: its method, lower bound, T and scale are the "
        "defaults of the options below (default: upscale's default model).",
    ),
    method: str | None = typer.Option(
        None,
        "--method",
        "-m",
        metavar="METHOD",
        show_default=False,
        help="dino-resnet50, dino-vits8, dino-vits16 (these need weights), "
        "or the weight-free gaussian, edge, sift, none. Default: the model's.",
    ),
    heads: str = typer.Option("max", "--heads", metavar="max|mean|K", help="How DINO heads combine."),
    weights: Path | None = typer.Option(
        None, "--weights", metavar="FILE", show_default=False, help="DINO weights (.safetensors)."
    ),
    scale: float | None = typer.Option(
        None,
        "--scale",
        metavar="S",
        show_default=False,
        help="The map's size is the image's times S. Default: the model's scale.",
    ),
    overlay: bool = typer.Option(False, "--overlay", help="Blend the heat map over the image."),
    colorbar: bool = typer.Option(
        False, "--colorbar", help="Title the heat map (or overlay) and add a colour bar of A; the PNG gets wider."
    ),
    timeline: int | None = typer.Option(
        None,
        "--timeline",
        metavar="N",
        show_default=False,
        help="Also write <stem>.<method>.timeline.png: the mask M(t) at N steps and the active area vs t.",
    ),
    lower_bound: float | None = typer.Option(
        None, "--lower-bound", metavar="L", show_default=False, help="YODA's lower bound l. Default: the model's."
    ),
    steps: int | None = typer.Option(
        None, "--steps", metavar="T", show_default=False, help="Training steps T of M(t). Default: the model's."
    ),
    flat_floor: float | None = typer.Option(
        None,
        "--flat-floor",
        metavar="LEVELS",
        show_default=False,
        help="LR areas with less detail than this keep the base: never active in M(t). Default: the model's.",
    ),
    clean: str | None = clean_option(),
    npy: bool = typer.Option(False, "--npy", help="Also write the map as <stem>.<method>.attention.npy (float32)."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Look into sub-folders too."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    device: str = typer.Option("auto", "--device", metavar="auto|cpu|cuda", help="Where to compute."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print errors only."),
) -> None:
    """Compute YODA attention maps A and show the time-dependent mask M(t) as images.

    The map is computed from each image as the LR input (cleaned as `upscale` cleans it, --clean),
    at the image's size times --scale.
    Prints one line per image: the map size and the pixel-update fraction mean(min(1, A + l)), 0 in
    flat areas (--flat-floor).
    """
    from ..attention import MissingWeightsError, require_weights
    from ..jobs.attention_files import OWN_ENDINGS, AttentionMaps, Mapped, map_outputs, model_attention
    from ..jobs.batch import Batch, Hints, Item, each

    defaults = model_attention(model)
    maps = AttentionMaps(
        method or defaults.method,
        heads=heads,
        weights=weights,
        scale=float(defaults.scale) if scale is None else scale,
        overlay=overlay,
        colorbar=colorbar,
        timeline=timeline,
        lower_bound=defaults.lower_bound if lower_bound is None else lower_bound,
        steps=defaults.train_steps if steps is None else steps,
        device=device,
        flat_floor=defaults.flat_floor if flat_floor is None else flat_floor,
        clean=defaults.clean if clean is None else clean,
    )
    if maps.uses_weights:
        try:
            require_weights(maps.method, weights)
        except MissingWeightsError as error:
            raise UsageError(f"{error} with --method; or pass --weights FILE") from None
    if out is not None and not out.is_dir():
        if out.suffix.lower() != ".png" and (out.suffix.lower() in (*IMAGE_EXTENSIONS, ".npy") or out.is_file()):
            raise UsageError(f"--out {out}: give a .png file (one image) or a folder")
        if out.suffix.lower() == ".png" and (len(images) != 1 or images[0].is_dir()):
            raise UsageError("--out FILE takes a single image; give a folder (--out DIR) for several")
    if weights is not None and not maps.uses_weights:
        notes(quiet)(f"--weights is not used by --method {maps.method}")
    if not quiet and method is None:
        notes(quiet)(
            f"settings of {defaults.model} (as upscale uses them): {maps.method}, l = {maps.lower_bound:g}, "
            + (f"flat areas below {maps.flat_floor:g} kept, " if maps.flat_floor else "")
            + f"T = {maps.steps}, scale {maps.scale:g}"
        )
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
        Item(
            image,
            (folder / image.name).as_posix(),
            map_outputs(image, folder, out, maps.method, timeline is not None, npy),
        )
        for image, folder in found.images
    ]

    flat = f", flat areas below {maps.flat_floor:g} kept" if maps.flat_floor and maps.method != "none" else ""

    def show(item: Item, mapped: Mapped) -> None:
        if not quiet:
            (height, width), fraction = mapped.size, mapped.fraction
            typer.echo(
                f"{item.image}: {maps.method} map {width}x{height}, pixel-update fraction {fraction:.3f} "
                f"(l = {maps.lower_bound:g}{flat}) -> {', '.join(map(str, item.pending))}"
            )

    if batch.run(batch.plan(items), each(maps), done=show).failed:
        raise typer.Exit(1)
