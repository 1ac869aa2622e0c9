"""`yoda-sr train`: flags and a TOML file become a training config; the work is ``training.Trainer``."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import note
from .options import torchrun_shard


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
    resume: bool | None = typer.Option(
        None, "--resume", help="Continue the run in --out from its last checkpoint (settings from its config.toml)."
    ),
    val_every: int | None = typer.Option(None, "--val-every", metavar="N", help="Validate every N steps."),
    save_every: int | None = typer.Option(None, "--save-every", metavar="N", help="Checkpoint every N steps."),
    log_every: int | None = typer.Option(
        None,
        "--log-every",
        metavar="N",
        help="Progress line every N steps when stderr is not a terminal (default: 100, or 5% of shorter runs).",
    ),
    val_images: int | None = typer.Option(None, "--val-images", metavar="N", help="Crops each validation samples."),
    val_steps: int | None = typer.Option(None, "--val-steps", metavar="N", help="Sampling steps of validation."),
    device: str | None = typer.Option(None, "--device", metavar="auto|cpu|cuda", help="Where to train."),
    process: str | None = typer.Option(
        None, "--process", metavar="ddpm|resshift", help="Diffusion process (default ddpm; docs/method.md §10)."
    ),
    kappa: float | None = typer.Option(None, "--kappa", metavar="K", help="ResShift's noise scale (default 2)."),
    perceptual: float | None = typer.Option(
        None, "--perceptual", metavar="W", help="Weight of LPIPS-VGG on the denoiser's z_0 estimate (needs lpips-vgg)."
    ),
    unroll_steps: int | None = typer.Option(
        None,
        "--unroll-steps",
        metavar="N",
        help="Compare the N-step sampler's output (gradients through it) in --perceptual and --sample-l1; 0: off.",
    ),
    sample_l1: float | None = typer.Option(
        None, "--sample-l1", metavar="W", help="Weight of the L1 between the unrolled sample and the HR crop."
    ),
    freeze_base: bool | None = typer.Option(
        None, "--freeze-base", help="Train the denoiser only: the LR encoder and its regression base stay fixed."
    ),
    lr_noise: float | None = typer.Option(
        None, "--lr-noise", metavar="SIGMA", help="Noise on half the LR crops, sigma up to this (8-bit levels)."
    ),
    lr_jpeg: int | None = typer.Option(
        None, "--lr-jpeg", metavar="Q", help="JPEG on half the LR crops, quality Q..95 (0: none)."
    ),
    lr_degradation: str | None = typer.Option(
        None,
        "--lr-degradation",
        metavar="bicubic|realistic",
        help="Training LR: the bicubic downscale (default) or random blur, resize, noise and JPEG (docs/method.md §6).",
    ),
    lr_clean: str | None = typer.Option(
        None,
        "--lr-clean",
        metavar="off|auto",
        help="auto: clean each degraded training LR crop as upscale's --clean auto will (default off).",
    ),
    compile_model: bool | None = typer.Option(
        None, "--compile", help="Train through torch.compile: minutes to compile, then faster steps."
    ),
    config: Path | None = typer.Option(None, "--config", metavar="FILE.toml", help="Settings; flags override."),
) -> None:
    """Train or fine-tune a denoiser with YODA masked training (DDP under torchrun), for DDPM or ResShift.

    `--out RUN --resume` continues a run with the settings in RUN/config.toml; it may be given a new
    --iterations (the validation spacing stays as recorded), but not settings that change its weights.
    """
    from ..training import Trainer, load_config

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
        log_every=log_every,
        val_images=val_images,
        val_steps=val_steps,
        device=device,
        process=process,
        kappa=kappa,
        perceptual=perceptual,
        unroll_steps=unroll_steps,
        sample_l1=sample_l1,
        freeze_base=freeze_base,
        lr_noise=lr_noise,
        lr_jpeg=lr_jpeg,
        lr_degradation=lr_degradation,
        lr_clean=lr_clean,
        compile=compile_model,
    )
    rank, _, _ = torchrun_shard(rendezvous=True)  # the environment checked before any work
    main_process = rank == 0
    settings = load_config(config, overrides, log=note if main_process else None)
    weights = Trainer(settings, log=note).run()
    typer.echo(f"weights: {weights} (use --model {Path(settings.out)})")
