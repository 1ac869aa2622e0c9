"""`yoda-sr evaluate`: options in, a results table out; the work is ``evaluation.evaluate``."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import clean_option, debugging, flat_floor_option, notes, output_path, photo_model_option, report_error


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
    flat_floor: float | None = flat_floor_option(),
    clean: str | None = clean_option(),
    photo_model: str | None = photo_model_option(),
    sparse: str = typer.Option(
        "on", "--sparse", metavar="on|off", help="Run the denoiser only on the active blocks of YODA's mask."
    ),
    block: str = typer.Option(
        "auto", "--block", metavar="auto|0|PX", help="Block side the map is averaged over (auto: 64 sparse, 0 dense)."
    ),
    compare: str = typer.Option(
        "bicubic,base,plain,yoda",
        "--compare",
        metavar="METHODS",
        help="Comma-separated methods: bicubic, base (the model's regression output, no diffusion), "
        "plain (attention none), yoda, and spandrel:FILE (another SR model in a .safetensors or .pth file that "
        "spandrel recognises, pip install 'yoda-sr[peers]'; named spandrel:<file stem>).",
    ),
    degrade: str = typer.Option(
        "none",
        "--degrade",
        metavar="none|noise:S|jpeg:Q",
        help="Degrade the LR as users' photos are: Gaussian noise of sigma S (8-bit levels), then JPEG at quality Q; "
        "comma-separated, e.g. noise:5,jpeg:60.",
    ),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Base seed; each image's seed also depends on its path."),
    device: str = typer.Option("auto", "--device", metavar="auto|cpu|cuda[:i]|mps", help="Where to compute."),
    dtype: str = typer.Option("auto", "--dtype", metavar="auto|fp32|fp16|bf16", help="Model precision."),
    limit: int | None = typer.Option(None, "--limit", metavar="N", help="Evaluate only the first N images."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Look into sub-folders too."),
    out: Path | None = typer.Option(
        None, "--out", "-o", metavar="DIR", parser=output_path, help="Results folder (default: ./eval_<model name>)."
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Recompute every result in --out (default: finish an evaluation with these settings).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors and the results table."),
) -> None:
    """Measure PSNR/SSIM/LPIPS of a model against bicubic, its regression base and plain diffusion.

    Prints a Markdown table (one row per method; LPIPS-VGG and LPIPS-Alex columns when their weights
    are installed: `yoda-sr checkpoints download lpips-vgg lpips-alex`; every metric leaves out a
    border of --scale pixels) and writes per_image.csv (with what --clean found and did per image),
    summary.json, grid.png (every image, rows named), worst.png (crops where yoda does worst against
    base) and every method's results to --out. Run again into the same --out with the same settings,
    it computes only what is missing (an interrupted evaluation finishes).
    """
    from ..api import Settings
    from ..evaluation.core import evaluate as run_evaluation
    from ..evaluation.core import markdown_table
    from ..settings import parse_block, parse_sparse

    summary = run_evaluation(
        data,
        model=model,
        scale=scale,
        settings=Settings(
            steps=steps,
            attention=attention,
            lower_bound=lower_bound,
            flat_floor=flat_floor,
            clean=clean,
            photo_model=photo_model,
            sparse=parse_sparse(sparse),
            block=parse_block(block),
        ),
        compare=compare,
        degrade=degrade,
        seed=seed,
        device=device,
        dtype=dtype,
        limit=limit,
        recursive=recursive,
        out=out,
        overwrite=overwrite,
        note=notes(quiet),
        report=report_error,
        reraise=debugging(ctx),
    )
    for line in markdown_table(summary.means, summary.lpips_nets):
        typer.echo(line)
    if summary.lpips_note is not None:
        typer.echo(summary.lpips_note)
    for line in summary.explanations:
        typer.echo(line)
    if summary.failed:
        raise typer.Exit(1)
