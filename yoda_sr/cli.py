"""The `yoda-sr` command line: parses, calls the library, formats output. No maths here.

Only Typer is imported at start-up, so `--version` and `--help` answer without loading torch.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import typer
from typer.exceptions import TyperException

from ._version import __version__
from .cli_checkpoints import app as checkpoints_app
from .errors import UsageError, YodaError
from .files import IMAGE_EXTENSIONS, find_images

app = typer.Typer(
    name="yoda-sr",
    help="Diffusion super-resolution that diffuses only where it matters (YODA: You Only Diffuse Areas).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"yoda-sr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """Diffusion super-resolution that diffuses only where it matters (YODA)."""


@app.command()
def upscale(
    ctx: typer.Context,
    inputs: list[Path] = typer.Argument(..., metavar="INPUT...", help="Image files, folders or globs."),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        metavar="FILE|DIR",
        help="An image file (one input) or a folder (created; sub-folders mirrored). "
        "Default: beside each input, named <stem>_x<scale>.",
    ),
    scale: int | None = typer.Option(None, "--scale", "-s", metavar="S", help="Upscale factor (default: the model's)."),
    model: str | None = typer.Option(
        None, "--model", "-m", metavar="NAME|PATH", help="Checkpoint name, .safetensors file or training run folder."
    ),
    steps: int | None = typer.Option(None, "--steps", metavar="N", help="Sampling steps (default: the model's)."),
    sampler: str | None = typer.Option(None, "--sampler", metavar="ddpm|ddim", help="Default: the model's."),
    eta: float | None = typer.Option(None, "--eta", metavar="E", help="DDIM eta (0 = deterministic)."),
    attention: str = typer.Option(
        "auto",
        "--attention",
        metavar="auto|METHOD",
        help="YODA attention map: the model's (auto), dino-resnet50, dino-vits8, dino-vits16, gaussian, "
        "edge, sift, or none (plain diffusion).",
    ),
    lower_bound: float | None = typer.Option(None, "--lower-bound", "-l", metavar="L", help="YODA's lower bound l."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Base seed; each image's seed also depends on its path."),
    device: str = typer.Option("auto", "--device", metavar="auto|cpu|cuda[:i]|mps", help="Where to compute."),
    dtype: str = typer.Option("auto", "--dtype", metavar="auto|fp32|fp16|bf16", help="Model precision."),
    tile: str = typer.Option("auto", "--tile", metavar="auto|0|PX", help="HR tile side for large images (0: off)."),
    tile_overlap: int = typer.Option(32, "--tile-overlap", metavar="PX", help="Overlap between tiles."),
    batch_size: int = typer.Option(1, "--batch-size", "-b", metavar="B", help="Images of one size sampled together."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Look into sub-folders (mirrored under --out)."),
    suffix: str | None = typer.Option(None, "--suffix", metavar="S", help="Appended to output names."),
    fmt: str = typer.Option("auto", "--format", metavar="auto|png|jpg|webp|tiff", help="Output format."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (default: skip them)."),
    save_attention: bool = typer.Option(False, "--save-attention", help="Also write <output>.attention.png."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object per image on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print errors only."),
    max_pixels: int | None = typer.Option(
        None, "--max-pixels", metavar="N", help="Largest input (width x height) to decode; raises the bomb guard."
    ),
) -> None:
    """Super-resolve images, folders of images and globs with YODA diffusion."""
    from .cli_upscale import run

    run(
        ctx,
        inputs,
        out,
        scale,
        model,
        steps,
        sampler,
        eta,
        attention,
        lower_bound,
        seed,
        device,
        dtype,
        tile,
        tile_overlap,
        batch_size,
        recursive,
        suffix,
        fmt,
        overwrite,
        save_attention,
        json_output,
        quiet,
        max_pixels,
    )


_ATTENTION_SUFFIX = ".attention"
_OWN_OUTPUT_ENDINGS = (".attention.png", ".timeline.png", ".attention.npy")


def _note(message: str, quiet: bool) -> None:
    """A remark on stderr (skipped files and the like), silenced by --quiet."""
    if not quiet:
        typer.echo(f"yoda-sr: {message}", err=True)


def _report_error(message: str) -> None:
    """One `yoda-sr: error: ...` line on stderr, for a failure the run goes on past."""
    typer.echo(f"yoda-sr: error: {message}", err=True)


def _debugging(ctx: typer.Context) -> bool:
    """Whether the root `--debug` flag is set."""
    return bool(ctx.find_root().params.get("debug"))


def _attention_outputs(
    image: Path, subfolder: Path, out: Path | None, out_is_file: bool, timeline: bool, npy: bool
) -> list[Path]:
    """Output paths of one image: the map PNG, then the timeline PNG and the .npy if asked for."""
    if out_is_file:
        primary = out
    else:
        folder = image.parent if out is None else out / subfolder
        primary = folder / f"{image.stem}{_ATTENTION_SUFFIX}.png"
    base = primary.name[: -len(primary.suffix)] if primary.suffix else primary.name
    base = base.removesuffix(_ATTENTION_SUFFIX)
    outputs = [primary]
    if timeline:
        outputs.append(primary.with_name(f"{base}.timeline.png"))
    if npy:
        outputs.append(primary.with_name(f"{base}{_ATTENTION_SUFFIX}.npy"))
    return outputs


def _parse_heads(heads: str) -> str | int:
    """--heads: "max", "mean" or a head index."""
    from .attention import HEAD_MODES, NUM_HEADS

    value = heads.strip().lower()
    if value in HEAD_MODES:
        return value
    if value.isdecimal() and int(value) < NUM_HEADS:
        return int(value)
    raise UsageError(f"--heads must be max, mean or a head index 0..{NUM_HEADS - 1}, got {heads!r}")


@app.command()
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
    from .attention import (
        DEFAULT_METHOD,
        METHODS,
        WEIGHTED_METHODS,
        MissingWeightsError,
        compute_attention,
    )
    from .attention.render import heatmap
    from .attention.render import overlay as overlay_heatmap
    from .attention.render import timeline as mask_timeline
    from .devices import resolve_device
    from .fsutil import atomic_write
    from .imageio import read_picture, save_png
    from .imaging import resize_bicubic, scaled_size, to_array, to_tensor
    from .masking import expected_update_fraction

    method = DEFAULT_METHOD if method is None else method.strip().lower()
    if method not in METHODS:
        raise UsageError(f"unknown --method {method!r}; choose from {', '.join(METHODS)}")
    head_choice = _parse_heads(heads)
    if not 0.0 <= lower_bound <= 1.0:
        raise UsageError(f"--lower-bound must lie in [0, 1], got {lower_bound:g}")
    if steps < 1:
        raise UsageError(f"--steps must be a positive integer, got {steps}")
    if timeline is not None and timeline < 1:
        raise UsageError(f"--timeline needs at least 1 frame, got {timeline}")
    if not (math.isfinite(scale) and scale > 0):
        raise UsageError(f"--scale must be a positive number, got {scale:g}")
    out_is_file = False
    if out is not None and not out.is_dir():
        suffix = out.suffix.lower()
        if suffix == ".png":
            out_is_file = True
        elif suffix in IMAGE_EXTENSIONS or suffix == ".npy" or out.is_file():
            raise UsageError(f"--out {out}: give a .png file (one image) or a folder")
    if out_is_file and (len(images) != 1 or images[0].is_dir()):
        raise UsageError("--out FILE takes a single image; give a folder (--out DIR) for several")
    torch_device = resolve_device(device)
    if weights is not None and method not in WEIGHTED_METHODS:
        _note(f"--weights is not used by --method {method}", quiet)
    debug = _debugging(ctx)

    def render(image: Path, primary: Path, pending: list[Path]) -> tuple[tuple[int, int], float]:
        """Compute one image's map, render what ``pending`` asks for, write it; (size, fraction)."""
        lr = to_tensor(read_picture(image).rgb)
        rgb = to_array(lr)
        map_size = scaled_size(rgb.shape[:2], scale)
        maps = compute_attention(
            lr.to(torch_device),
            method,
            hr_size=map_size,
            heads=head_choice,
            weights=weights,
            device=torch_device,
        )
        attention_map = maps[0, 0].float().cpu()
        values = attention_map.numpy()
        renders: dict[Path, object] = {}
        for output in pending:
            if output == primary and overlay:
                if map_size != rgb.shape[:2]:
                    rgb = to_array(resize_bicubic(lr, size=map_size))
                renders[output] = overlay_heatmap(rgb, values)
            elif output == primary:
                renders[output] = heatmap(values)
            elif output.suffix == ".npy":
                renders[output] = values.astype("float32")
            else:
                renders[output] = mask_timeline(values, lower_bound, steps, timeline)
        for output, content in renders.items():
            output.parent.mkdir(parents=True, exist_ok=True)
            if output.suffix == ".npy":
                atomic_write(output, lambda handle, array=content: _save_npy(handle, array))
            else:
                save_png(content, output)
        return map_size, expected_update_fraction(attention_map, lower_bound)

    search = find_images(images, recursive, ignore_endings=_OWN_OUTPUT_ENDINGS)
    for note in search.notes:
        _note(note, quiet)
    for path in search.missing:
        _report_error(f"{path}: no such file or folder")
    found, failures = search.images, len(search.missing)
    if not found and not failures:
        raise YodaError(f"no images found in {', '.join(str(path) for path in images)}")
    inputs = {image.resolve() for image, _ in found}
    claimed: dict[Path, Path] = {}
    for image, subfolder in found:
        outputs = _attention_outputs(image, subfolder, out, out_is_file, timeline is not None, npy)
        try:
            for output in outputs:
                if output.resolve() in inputs:
                    raise YodaError(f"{output} is an input image; refusing to overwrite it")
                if output.resolve() in claimed:
                    raise YodaError(
                        f"its output {output} is also that of {claimed[output.resolve()]}; "
                        "rename one or run them separately"
                    )
            claimed.update((output.resolve(), image) for output in outputs)
            pending = [output for output in outputs if overwrite or not output.exists()]
            if not pending:
                existing = ", ".join(map(str, outputs))
                _note(f"skipped {image}: already done ({existing}); use --overwrite", quiet)
                continue
            if len(pending) < len(outputs):
                kept = [str(output) for output in outputs if output not in pending]
                _note(f"kept the existing {', '.join(kept)}; use --overwrite to replace", quiet)
            (height, width), fraction = render(image, outputs[0], pending)
        except MissingWeightsError:
            raise
        except Exception as error:
            if debug:
                raise
            message = str(error)
            if not isinstance(error, YodaError):
                message = f"{type(error).__name__}: {message}"
            _report_error(message if message.startswith(str(image)) else f"{image}: {message}")
            failures += 1
            continue
        if not quiet:
            typer.echo(
                f"{image}: {method} map {width}x{height}, pixel-update fraction {fraction:.3f} "
                f"(l = {lower_bound:g}) -> {', '.join(map(str, pending))}"
            )
    if failures:
        raise typer.Exit(1)


def _save_npy(handle, array) -> None:
    """Write ``array`` to an open binary file in NumPy's .npy format."""
    import numpy as np

    np.save(handle, array, allow_pickle=False)


@app.command()
def train(
    data: str | None = typer.Option(None, "--data", metavar="DIR", help="Folder of training images (recursive)."),
    val: str | None = typer.Option(None, "--val", metavar="DIR", help="Validation images (default: training crops)."),
    model: str | None = typer.Option(
        None, "--model", metavar="CONFIG|NAME|PATH", help="Architecture config to train, or weights to fine-tune."
    ),
    init_from: str | None = typer.Option(None, "--init-from", metavar="NAME|PATH", help="Start from these weights."),
    scale: int | None = typer.Option(None, "--scale", metavar="S", help="Check the model's scale."),
    hr_size: int | None = typer.Option(None, "--hr-size", metavar="PX", help="HR crop (patches) or face size."),
    mode: str | None = typer.Option(None, "--mode", metavar="patches|faces", help="Random crops, or whole faces."),
    attention: str | None = typer.Option(None, "--attention", metavar="METHOD", help="YODA map, or none (plain)."),
    lower_bound: float | None = typer.Option(None, "--lower-bound", metavar="L", help="YODA's lower bound l."),
    iterations: int | None = typer.Option(None, "--iterations", metavar="N", help="Optimizer steps."),
    batch_size: int | None = typer.Option(None, "--batch-size", metavar="B", help="Samples per process per step."),
    grad_accum: int | None = typer.Option(None, "--grad-accum", metavar="K", help="Micro-batches per step."),
    lr: float | None = typer.Option(None, "--lr", metavar="LR", help="AdamW learning rate (default 5e-5)."),
    weight_decay: float | None = typer.Option(None, "--weight-decay", metavar="WD", help="AdamW weight decay."),
    warmup: int | None = typer.Option(None, "--warmup", metavar="N", help="Linear warm-up steps."),
    ema: float | None = typer.Option(None, "--ema", metavar="D", help="EMA decay of the saved weights."),
    amp: str | None = typer.Option(None, "--amp", metavar="bf16|fp16|no", help="Mixed precision."),
    num_workers: int | None = typer.Option(None, "--num-workers", metavar="W", help="Data loader workers."),
    seed: int | None = typer.Option(None, "--seed", metavar="N", help="Seed of weights, data and noise."),
    out: str | None = typer.Option(None, "--out", metavar="RUN_DIR", help="Run folder (weights, state, metrics)."),
    resume: bool | None = typer.Option(None, "--resume", help="Continue the run in --out from its last checkpoint."),
    val_every: int | None = typer.Option(None, "--val-every", metavar="N", help="Validate every N steps."),
    save_every: int | None = typer.Option(None, "--save-every", metavar="N", help="Checkpoint every N steps."),
    device: str | None = typer.Option(None, "--device", metavar="auto|cpu|cuda", help="Where to train."),
    config: Path | None = typer.Option(None, "--config", metavar="FILE.toml", help="Settings; flags override."),
) -> None:
    """Train or fine-tune a denoiser with YODA masked training (DDP under torchrun)."""
    from .training import Trainer, load_config

    overrides = dict(
        data=data,
        val=val,
        model=model,
        init_from=init_from,
        scale=scale,
        hr_size=hr_size,
        mode=mode,
        attention=attention,
        lower_bound=lower_bound,
        iterations=iterations,
        batch_size=batch_size,
        grad_accum=grad_accum,
        lr=lr,
        weight_decay=weight_decay,
        warmup=warmup,
        ema=ema,
        amp=amp,
        num_workers=num_workers,
        seed=seed,
        out=out,
        resume=resume,
        val_every=val_every,
        save_every=save_every,
        device=device,
    )
    settings = load_config(config, overrides)
    weights = Trainer(settings, log=lambda message: typer.echo(f"yoda-sr: {message}", err=True)).run()
    typer.echo(f"weights: {weights} (use --model {Path(settings.out)})")


@app.command()
def evaluate(
    ctx: typer.Context,
    data: Path = typer.Option(
        ...,
        "--data",
        "-d",
        metavar="DIR",
        show_default=False,
        help="Folder of ground-truth (HR) images; each is shrunk by the scale to make the LR input.",
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", metavar="NAME|PATH", help="Checkpoint name, .safetensors file or training run folder."
    ),
    scale: int | None = typer.Option(None, "--scale", "-s", metavar="S", help="Upscale factor (default: the model's)."),
    steps: int | None = typer.Option(None, "--steps", metavar="N", help="Sampling steps (default: the model's)."),
    attention: str = typer.Option(
        "auto", "--attention", metavar="auto|METHOD", help="Attention map of the yoda method (auto: the model's)."
    ),
    lower_bound: float | None = typer.Option(None, "--lower-bound", "-l", metavar="L", help="YODA's lower bound l."),
    compare: str = typer.Option(
        "bicubic,plain,yoda",
        "--compare",
        metavar="METHODS",
        help="Comma-separated methods: bicubic, plain (attention none), yoda.",
    ),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Base seed; each image's seed also depends on its path."),
    device: str = typer.Option("auto", "--device", metavar="auto|cpu|cuda[:i]|mps", help="Where to compute."),
    dtype: str = typer.Option("auto", "--dtype", metavar="auto|fp32|fp16|bf16", help="Model precision."),
    limit: int | None = typer.Option(None, "--limit", metavar="N", help="Evaluate only the first N images."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Look into sub-folders too."),
    out: Path | None = typer.Option(
        None, "--out", "-o", metavar="DIR", help="Results folder (default: ./eval_<model name>)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a non-empty --out folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors and the results table."),
) -> None:
    """Measure PSNR/SSIM/LPIPS of a model against bicubic and plain diffusion on HR images.

    Prints a Markdown table (one row per method) and writes per_image.csv, summary.json, grid.png
    and every method's results to --out.
    """
    from .evaluate import run

    run(
        ctx,
        data,
        model,
        scale,
        steps,
        attention,
        lower_bound,
        compare,
        seed,
        device,
        dtype,
        limit,
        recursive,
        out,
        overwrite,
        quiet,
    )


app.add_typer(checkpoints_app, name="checkpoints")


SAMPLE = "samples/astronaut.png"
"""A 128 x 128 crop of NASA's public-domain astronaut photo (via scikit-image), shipped in the package."""


@app.command()
def sample(
    out: Path = typer.Option(Path("yoda-sr-sample.png"), "--out", "-o", metavar="FILE", help="Where to write it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
) -> None:
    """Write the bundled sample photo (public domain) to a file, to try `yoda-sr upscale` on."""
    from importlib import resources

    from .fsutil import atomic_write_bytes

    if out.exists() and not overwrite:
        raise UsageError(f"{out} exists; pass --overwrite or choose another --out")
    data = (resources.files("yoda_sr") / SAMPLE).read_bytes()
    atomic_write_bytes(out, data)
    typer.echo(str(out))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `yoda-sr` console script: user errors become one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        code = app(args=args, prog_name="yoda-sr", standalone_mode=False)
    except TyperException as error:  # a command-line usage error, from Typer's own Click
        if debug:
            raise
        context = getattr(error, "ctx", None)
        if type(error).__name__ == "NoArgsIsHelpError" and context is not None:
            typer.echo(context.get_help())
            sys.exit(0)
        path = context.command_path if context is not None else "yoda-sr"
        typer.echo(f"yoda-sr: error: {error.format_message()} (see `{path} --help`)", err=True)
        sys.exit(getattr(error, "exit_code", 2))
    except YodaError as error:
        if debug:
            raise
        typer.echo(f"yoda-sr: error: {error}", err=True)
        sys.exit(error.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        if debug:
            raise
        typer.echo("yoda-sr: interrupted", err=True)
        sys.exit(130)
    if isinstance(code, int) and code:
        sys.exit(code)
