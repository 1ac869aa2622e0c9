"""SRDiff (Li et al., 2022): residual-space diffusion conditioned on RRDB features of the LR image.

The module tree and the computation follow the official code (github.com/LeiaLi/SRDiff:
``models/diffsr_modules.py``, ``models/commons.py``, ``models/diffusion.py``), so upstream weights
load with a renaming of the two top-level prefixes (``UPSTREAM_PREFIXES``) and give the same output.
Upstream reads its hyperparameters from a global ``hparams``; here they are constructor arguments
with upstream's names.

Work that does not depend on the noisy state or the step (the RRDB encoder, the projection of its
features to HR size, the projection of x_up) is done once per image in ``prepare``.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

from ._registry import register_arch
from .base import Condition, ModelInfo, SRDenoiser
from .mish import mish
from .rrdb import SUPPORTED_SCALES, RRDBNet

UPSTREAM_PREFIXES: dict[str, str] = {"unet.": "denoise_fn.", "encoder.": "rrdb."}
"""Our top-level state-dict prefixes -> upstream's (``GaussianDiffusion.denoise_fn`` / ``.rrdb``).

Below the prefix every key and shape is upstream's. An upstream ``.ckpt`` nests its weights as
``torch.load(path)["state_dict"]["model"]``.
"""


ResidualBase = Literal["bicubic", "rrdb", "bicubic+rrdb"]


class Mish(nn.Module):
    """x * tanh(softplus(x)), upstream's activation (``mish.mish``: one exponential on the CPU)."""

    def forward(self, x: Tensor) -> Tensor:
        return mish(x)


class SinusoidalPosEmb(nn.Module):
    """Transformer sinusoidal embedding of integer steps: [sin, cos] of step * 10000^(-i/(d/2 - 1))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, steps: Tensor) -> Tensor:
        """float32 embedding (N x dim) whatever the model's dtype."""
        half_dim = self.dim // 2
        log_scale = math.log(10000) / (half_dim - 1)
        frequencies = torch.exp(torch.arange(half_dim, device=steps.device) * -log_scale)
        angles = steps.to(torch.float32)[:, None] * frequencies[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class Block(nn.Module):
    """Reflection-padded 3x3 convolution and Mish (upstream's ``Block`` with ``groups=0``)."""

    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim_out, 3), Mish())

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class ResnetBlock(nn.Module):
    """Two Blocks with the step embedding added in between, and a (1x1-projected) skip."""

    def __init__(self, dim: int, dim_out: int, time_emb_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(Mish(), nn.Linear(time_emb_dim, dim_out))
        self.block1 = Block(dim, dim_out)
        self.block2 = Block(dim_out, dim_out)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: Tensor, time_emb: Tensor) -> Tensor:
        h = self.block1(x) + self.mlp(time_emb)[:, :, None, None]
        h = self.block2(h)
        return h + self.res_conv(x)


class Downsample(nn.Module):
    """Reflection-padded strided 3x3 convolution (halves H and W, rounding up)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """4x4 transposed convolution of stride 2 (doubles H and W)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.ConvTranspose2d(dim, dim, 4, 2, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class LinearAttention(nn.Module):
    """Linear attention (softmax over positions on the keys), 4 heads of 32 channels."""

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32) -> None:
        super().__init__()
        self.heads = heads
        hidden_dim = dim_head * heads
        self.to_qkv = nn.Conv2d(dim, hidden_dim * 3, 1, bias=False)
        self.to_out = nn.Conv2d(hidden_dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        qkv = self.to_qkv(x).reshape(batch, 3, self.heads, -1, height * width)
        q, k, v = qkv.unbind(1)
        k = k.softmax(dim=-1)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q)
        return self.to_out(out.reshape(batch, -1, height, width))


class Rezero(nn.Module):
    """Scales a module's output by a learned scalar initialised at zero."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.g = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x) * self.g


class Residual(nn.Module):
    """fn(x) + x."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x) + x


class SRDiffUNet(nn.Module):
    """SRDiff's denoiser (upstream ``Unet``): GroupNorm-free ResNet UNet with Mish activations.

    The RRDB features are projected to HR size by ``cond_proj`` and, with ``up_input``, x_up by
    ``up_proj``; both are added after the first resolution level. ``forward`` takes them already
    projected (``project_condition`` / ``project_input``), which is what upstream computes inline.
    """

    def __init__(
        self,
        dim: int,
        dim_mults: list[int],
        cond_channels: int,
        scale: int,
        use_attn: bool = False,
        up_input: bool = False,
        use_wn: bool = False,
        out_dim: int = 3,
    ) -> None:
        super().__init__()
        dims = [3, *(dim * mult for mult in dim_mults)]
        in_out = list(itertools.pairwise(dims))
        num_resolutions = len(in_out)
        self.size_multiple = 2 ** (num_resolutions - 1)
        self.use_attn = use_attn

        self.cond_proj = nn.ConvTranspose2d(cond_channels, dim, scale * 2, scale, scale // 2)
        self.time_pos_emb = SinusoidalPosEmb(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 4), Mish(), nn.Linear(dim * 4, dim))

        self.downs = nn.ModuleList()
        for index, (dim_in, dim_out) in enumerate(in_out):
            is_last = index == num_resolutions - 1
            self.downs.append(
                nn.ModuleList(
                    [
                        ResnetBlock(dim_in, dim_out, time_emb_dim=dim),
                        ResnetBlock(dim_out, dim_out, time_emb_dim=dim),
                        nn.Identity() if is_last else Downsample(dim_out),
                    ]
                )
            )

        mid_dim = dims[-1]
        self.mid_block1 = ResnetBlock(mid_dim, mid_dim, time_emb_dim=dim)
        if use_attn:
            self.mid_attn = Residual(Rezero(LinearAttention(mid_dim)))
        self.mid_block2 = ResnetBlock(mid_dim, mid_dim, time_emb_dim=dim)

        self.ups = nn.ModuleList()
        for dim_in, dim_out in reversed(in_out[1:]):
            self.ups.append(
                nn.ModuleList(
                    [
                        ResnetBlock(dim_out * 2, dim_in, time_emb_dim=dim),
                        ResnetBlock(dim_in, dim_in, time_emb_dim=dim),
                        Upsample(dim_in),
                    ]
                )
            )

        self.final_conv = nn.Sequential(Block(dim, dim), nn.Conv2d(dim, out_dim, 1))
        self.up_proj = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(3, dim, 3)) if up_input else None
        if use_wn:
            self._apply_weight_norm()

    def _apply_weight_norm(self) -> None:
        """Weight-normalise every Conv1d/Conv2d as upstream does (``weight_g``/``weight_v`` keys)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            for module in self.modules():
                if isinstance(module, (nn.Conv1d, nn.Conv2d)):
                    torch.nn.utils.weight_norm(module)

    def project_condition(self, trunk_features: list[Tensor]) -> Tensor:
        """Every third RRDB trunk feature (upstream's ``cond[2::3]``), projected to HR size."""
        return self.cond_proj(torch.cat(trunk_features[2::3], 1))

    def project_input(self, x_up: Tensor) -> Tensor:
        """The bicubic upscale projected to ``dim`` channels (used only with ``up_input``)."""
        if self.up_proj is None:
            raise RuntimeError("this SRDiff UNet was built without up_input")
        return self.up_proj(x_up)

    def forward(self, x: Tensor, time: Tensor, cond: Tensor, up: Tensor | None = None) -> Tensor:
        """Epsilon for ``x`` at upstream's 0-indexed step ``time``, given the projected conditions."""
        time_emb = self.mlp(self.time_pos_emb(time).to(x.dtype))
        skips: list[Tensor] = []
        for level, stage in enumerate(self.downs):
            resnet, resnet2, downsample = cast(nn.ModuleList, stage)
            x = resnet(x, time_emb)
            x = resnet2(x, time_emb)
            if level == 0:
                x = x + cond
                if up is not None:
                    x = x + up
            skips.append(x)
            x = downsample(x)

        x = self.mid_block1(x, time_emb)
        if self.use_attn:
            x = self.mid_attn(x)
        x = self.mid_block2(x, time_emb)

        for stage in self.ups:
            resnet, resnet2, upsample = cast(nn.ModuleList, stage)
            x = torch.cat((x, skips.pop()), dim=1)
            x = resnet(x, time_emb)
            x = resnet2(x, time_emb)
            x = upsample(x)
        return self.final_conv(x)


@register_arch
class SRDiff(SRDenoiser):
    """SRDiff: an RRDB ``encoder`` of the LR image and a ``unet`` predicting epsilon in residual space.

    ``residual_base="bicubic"`` is the paper's residual (y - x_up) * 2; ``"rrdb"`` measures it from
    the encoder's own SR output (docs/method.md §3); ``"bicubic+rrdb"`` from x_up plus a correction the
    encoder predicts (its last convolution starts at zero, so the base starts as bicubic). ``prepare``
    is differentiable: freeze ``encoder`` (``requires_grad_(False)``) to train like upstream's
    ``fix_rrdb``.
    """

    arch = "srdiff"
    space = "residual"
    conditioning = "step"

    def __init__(
        self,
        *,
        hidden_size: int = 64,
        dim_mults: list[int] | tuple[int, ...] = (1, 2, 2, 4),
        rrdb_num_feat: int = 32,
        rrdb_num_block: int = 8,
        rrdb_growth: int | None = None,
        use_attn: bool = False,
        res: bool = True,
        up_input: bool = False,
        use_wn: bool = False,
        sr_scale: int = 4,
        residual_base: ResidualBase = "bicubic",
        lr_size: int | None = None,
        hr_size: int | None = None,
    ) -> None:
        """Upstream's hparams by name; ``rrdb_growth`` defaults to ``rrdb_num_feat // 2`` as upstream."""
        super().__init__()
        if not res:
            raise ValueError("SRDiff with res=false (image-space diffusion) is not supported; use res=true")
        if residual_base not in ("bicubic", "rrdb", "bicubic+rrdb"):
            raise ValueError(f"residual_base must be 'bicubic', 'rrdb' or 'bicubic+rrdb', got {residual_base!r}")
        if sr_scale not in SUPPORTED_SCALES:
            raise ValueError(f"SRDiff supports scales {SUPPORTED_SCALES}, got {sr_scale}")
        if rrdb_num_block < 2:
            raise ValueError(
                f"SRDiff conditions on trunk features 2, 5, 8, ...: needs rrdb_num_block >= 2, got {rrdb_num_block}"
            )
        if hidden_size < 4 or hidden_size % 2:
            raise ValueError(f"hidden_size must be even and at least 4, got {hidden_size}")
        if not dim_mults:
            raise ValueError("dim_mults must name at least one resolution level")
        growth = rrdb_num_feat // 2 if rrdb_growth is None else rrdb_growth
        self.config: dict[str, Any] = {
            "hidden_size": hidden_size,
            "dim_mults": [int(mult) for mult in dim_mults],
            "rrdb_num_feat": rrdb_num_feat,
            "rrdb_num_block": rrdb_num_block,
            "rrdb_growth": growth,
            "use_attn": use_attn,
            "res": res,
            "up_input": up_input,
            "use_wn": use_wn,
            "sr_scale": sr_scale,
            "residual_base": residual_base,
            "lr_size": lr_size,
            "hr_size": hr_size,
        }
        self.residual_base: ResidualBase = residual_base
        self.encoder = RRDBNet(3, 3, rrdb_num_feat, rrdb_num_block, growth, scale=sr_scale)
        if residual_base == "bicubic+rrdb":  # the correction starts at zero: the base starts as bicubic
            nn.init.zeros_(self.encoder.conv_last.weight)
            if self.encoder.conv_last.bias is not None:
                nn.init.zeros_(self.encoder.conv_last.bias)
        num_selected = len(range(2, self.encoder.num_features, 3))
        self.unet = SRDiffUNet(
            hidden_size,
            self.config["dim_mults"],
            cond_channels=rrdb_num_feat * num_selected,
            scale=sr_scale,
            use_attn=use_attn,
            up_input=up_input,
            use_wn=use_wn,
        )

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            arch=self.arch,
            scale=self.config["sr_scale"],
            in_channels=3,
            out_channels=3,
            space=self.space,
            size_multiple=math.lcm(self.config["sr_scale"], self.unet.size_multiple),
            lr_size=self.config["lr_size"],
            hr_size=self.config["hr_size"],
        )

    def prepare(self, lr: Tensor, x_up: Tensor) -> Condition:
        """Run the encoder once; project its features (and x_up with ``up_input``) to HR size."""
        scale = self.config["sr_scale"]
        expected = (lr.shape[-2] * scale, lr.shape[-1] * scale)
        if tuple(x_up.shape[-2:]) != expected:
            raise ValueError(f"x_up is {tuple(x_up.shape[-2:])}, expected LR size x{scale} = {expected}")
        refine = self.residual_base == "bicubic+rrdb"
        sr, trunk_features = self.encoder(lr, return_features=True, residual=refine)
        features = {"cond": self.unet.project_condition(trunk_features)}
        if self.unet.up_proj is not None:
            features["up"] = self.unet.project_input(x_up)
        if refine:
            base = (x_up + sr).clamp(-1, 1)
        else:
            base = sr if self.residual_base == "rrdb" else x_up
        return Condition(x_up=x_up, base=base, features=features)

    def forward(self, z: Tensor, cond: Condition, t: Tensor, noise_level: Tensor) -> Tensor:
        """Epsilon for the residual state ``z`` at step ``t`` (1..T); ``noise_level`` is unused.

        Upstream draws its training step from ``randint(0, T)`` and noises with
        ``sqrt_alphas_cumprod[t] = sqrt(prod_{i<=t} (1 - betas[i]))`` (0-indexed betas), i.e. our
        gamma at step t + 1; its sampler calls the network with i = T-1 .. 0 on the state whose noise
        level is gamma_{i+1}. So upstream's network input is our step number minus one.
        """
        multiple = self.unet.size_multiple
        if z.shape[-2] % multiple or z.shape[-1] % multiple:
            raise ValueError(f"SRDiff needs H and W divisible by {multiple}, got {tuple(z.shape[-2:])}")
        return self.unet(z, t - 1, cond.features["cond"], cond.features.get("up"))
