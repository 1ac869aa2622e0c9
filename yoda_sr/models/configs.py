"""The named configurations ``create_model`` and ``get_config`` know: upstream's released models,
the ones YODA's paper uses, and tiny ones for tests and CPU runs."""

from __future__ import annotations

from typing import Any

from ..diffusion.schedules import ScheduleSpec
from ._registry import ModelConfig, register_config

# --- SR3 (Janspiry's Image-Super-Resolution-via-Iterative-Refinement) -------------------------------

_SR3_UPSTREAM_SCHEDULE = ScheduleSpec(kind="linear", steps=2000, start=1e-6, end=1e-2)
_SR3_YODA_SCHEDULE = ScheduleSpec(kind="linear", steps=500, start=1e-6, end=0.03)

_FACE_64_HPARAMS: dict[str, Any] = {
    "in_channel": 6,
    "out_channel": 3,
    "inner_channel": 64,
    "norm_groups": 16,
    "channel_mults": [1, 2, 4, 8, 16],
    "attn_res": [],
    "res_blocks": 1,
    "dropout": 0.0,
    "with_noise_level_emb": True,
}

register_config(
    ModelConfig(
        name="sr3-16-128",
        arch="sr3",
        hparams={
            "scale": 8,
            "in_channel": 6,
            "out_channel": 3,
            "inner_channel": 64,
            "norm_groups": 32,
            "channel_mults": [1, 2, 4, 8, 8],
            "attn_res": [16],
            "res_blocks": 2,
            "dropout": 0.2,
            "with_noise_level_emb": True,
            "image_size": 128,
        },
        schedule=_SR3_UPSTREAM_SCHEDULE,
        description="SR3 16->128 faces (8x), Janspiry's sr_sr3_16_128 UNet (~97M parameters).",
        sampling_steps=200,
        tags=("face", "upstream"),
    )
)

register_config(
    ModelConfig(
        name="sr3-64-512",
        arch="sr3",
        hparams={"scale": 8, **_FACE_64_HPARAMS, "image_size": 512},
        schedule=_SR3_UPSTREAM_SCHEDULE,
        description="SR3 64->512 faces (8x), Janspiry's sr_sr3_64_512 UNet.",
        sampling_steps=200,
        tags=("face", "upstream"),
    )
)

register_config(
    ModelConfig(
        name="sr3-64-256",
        arch="sr3",
        hparams={"scale": 4, **_FACE_64_HPARAMS, "image_size": 256},
        schedule=_SR3_YODA_SCHEDULE,
        description="SR3 64->256 faces (4x), derived from the 64->512 UNet as YODA's paper uses it; T = 500.",
        sampling_steps=200,
        tags=("face",),
    )
)

register_config(
    ModelConfig(
        name="sr3-tiny",
        arch="sr3",
        hparams={
            "scale": 4,
            "in_channel": 6,
            "out_channel": 3,
            "inner_channel": 16,
            "norm_groups": 8,
            "channel_mults": [1, 2],
            "attn_res": [32],
            "res_blocks": 1,
            "dropout": 0.0,
            "with_noise_level_emb": True,
            "image_size": 64,
        },
        schedule=_SR3_YODA_SCHEDULE,
        description="A tiny SR3 UNet (4x, ~0.16M parameters) for tests and quick CPU runs.",
        sampling_steps=20,
        tags=("test",),
    )
)


# --- SRDiff (LeiaLi/SRDiff) ------------------------------------------------------------------------

_SRDIFF_UPSTREAM_MODEL = {"use_attn": False, "res": True, "up_input": False, "use_wn": False}
"""Settings shared by both upstream configs (configs/diffsr_base.yaml)."""

register_config(
    ModelConfig(
        name="srdiff-celeba-8x",
        arch="srdiff",
        hparams={
            "hidden_size": 64,
            "dim_mults": [1, 2, 2, 4],
            "rrdb_num_feat": 32,
            "rrdb_num_block": 8,
            "rrdb_growth": 16,
            **_SRDIFF_UPSTREAM_MODEL,
            "sr_scale": 8,
            "residual_base": "bicubic",
            "lr_size": 20,
            "hr_size": 160,
        },
        schedule=ScheduleSpec(kind="cosine", steps=100, cosine_s=0.008),
        description="SRDiff CelebA faces 20->160 (x8), upstream configs/diffsr_celeb.yaml",
        sampling_steps=100,
        tags=("face", "upstream"),
    )
)

# The RRDB sizes are diffsr_base.yaml's (32 features, 8 blocks). Upstream's own DIV2K RRDB recipe
# (configs/rrdb/df2k4x_pretrain.yaml) trains 64 features and 17 blocks, and users loading it edit
# rrdb_num_feat/rrdb_num_block to match (LeiaLi/SRDiff issue #10): read those from tensor shapes.
register_config(
    ModelConfig(
        name="srdiff-div2k-4x",
        arch="srdiff",
        hparams={
            "hidden_size": 64,
            "dim_mults": [1, 2, 3, 4],
            "rrdb_num_feat": 32,
            "rrdb_num_block": 8,
            "rrdb_growth": 16,
            **_SRDIFF_UPSTREAM_MODEL,
            "sr_scale": 4,
            "residual_base": "bicubic",
            "lr_size": None,
            "hr_size": None,
        },
        schedule=ScheduleSpec(kind="cosine", steps=100, cosine_s=0.008),
        description="SRDiff general images x4 (DIV2K + Flickr2K), upstream configs/diffsr_df2k4x.yaml",
        sampling_steps=100,
        tags=("general", "upstream"),
    )
)

_SRDIFF_TINY = {
    "hidden_size": 16,
    "dim_mults": [1, 2],
    "rrdb_num_feat": 16,
    "rrdb_num_block": 2,
    "rrdb_growth": 8,
    **_SRDIFF_UPSTREAM_MODEL,
    "sr_scale": 4,
    "lr_size": None,
    "hr_size": None,
}

register_config(
    ModelConfig(
        name="srdiff-tiny",
        arch="srdiff",
        hparams={**_SRDIFF_TINY, "residual_base": "bicubic"},
        schedule=ScheduleSpec(kind="cosine", steps=100),
        description="Tiny x4 SRDiff for tests and CPU experiments (bicubic residual base)",
        sampling_steps=20,
        tags=("test",),
    )
)

register_config(
    ModelConfig(
        name="srdiff-tiny-rrdb",
        arch="srdiff",
        hparams={**_SRDIFF_TINY, "residual_base": "rrdb"},
        schedule=ScheduleSpec(kind="cosine", steps=100),
        description="Tiny x4 SRDiff whose residual is measured from its RRDB output (docs/method.md §3)",
        sampling_steps=20,
        tags=("test",),
    )
)

register_config(
    ModelConfig(
        name="srdiff-x4-small",
        arch="srdiff",
        hparams={
            "hidden_size": 32,
            "dim_mults": [1, 2, 2, 4],
            "rrdb_num_feat": 32,
            "rrdb_num_block": 6,
            "rrdb_growth": 16,
            **_SRDIFF_UPSTREAM_MODEL,
            "sr_scale": 4,
            "residual_base": "bicubic+rrdb",
            "lr_size": None,
            "hr_size": None,
        },
        schedule=ScheduleSpec(kind="cosine", steps=100),
        description="A small x4 SRDiff for CPUs: bicubic + an RRDB 32x6 correction as the residual base, UNet 32",
        sampling_steps=20,
        tags=("general",),
    )
)
