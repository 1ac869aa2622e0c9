"""DINO attention maps (docs/method.md §4): ResNet-50 attention-pooling heads and ViT-S CLS attention.

Both modules take an LR image in [-1, 1] and return raw per-head maps (N x 6 x h' x w', float32),
each head a softmax over positions; normalising, combining heads and resizing to HR size is the
caller's job. Weights are never downloaded here: ``load_weights`` reads a local safetensors file.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, TypeVar

import timm
import torch
from safetensors.torch import load_file, save_file
from timm.models.resnet import ResNet
from timm.models.vision_transformer import Attention, VisionTransformer
from torch import Tensor, nn

from ..image.imaging import resize_bicubic

ATTENTION_HEADS = 6
DEFAULT_ATTENTION_SIZE = 448
RESNET_OUTPUT_STRIDE = 16
VIT_PATCH_SIZES = (8, 16)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_KEY_PREVIEW = 5
_VIT_METHODS = {"dino-vits8": 8, "dino-vits16": 16}
METHODS = ("dino-resnet50", *_VIT_METHODS)
"""The DINO attention methods, by the names ``--method`` and the checkpoint registry use."""
_Model = TypeVar("_Model", bound=nn.Module)


def attention_input_size(height: int, width: int, attention_size: int, multiple: int) -> tuple[int, int]:
    """Backbone input (height, width): short side scaled to ``attention_size`` (aspect kept), then
    each side rounded to the nearest multiple of ``multiple`` (half up), at least one multiple."""
    if attention_size < 1 or multiple < 1:
        raise ValueError(f"attention_size and multiple must be positive, got {attention_size} and {multiple}")
    scale = attention_size / min(height, width)

    def round_side(side: int) -> int:
        return max(multiple, math.floor(side * scale / multiple + 0.5) * multiple)

    return round_side(height), round_side(width)


def prepare_input(lr: Tensor, attention_size: int, multiple: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """LR N x 3 x h x w in [-1, 1] -> ImageNet-normalised backbone input (docs/method.md §4 step 1).

    Resized once with the MATLAB/PIL bicubic straight to ``attention_input_size``; computed in
    float32 on ``device``, returned in ``dtype``.
    """
    if lr.dim() != 4 or lr.shape[1] != 3:
        raise ValueError(f"expected an N x 3 x H x W RGB batch, got shape {tuple(lr.shape)}")
    unit = (lr.to(device=device, dtype=torch.float32) + 1.0) / 2.0
    size = attention_input_size(lr.shape[-2], lr.shape[-1], attention_size, multiple)
    resized = resize_bicubic(unit, size=size, value_range=(0.0, 1.0))
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return ((resized - mean) / std).to(dtype)


def attention_pooling(features: Tensor, heads: int = ATTENTION_HEADS) -> Tensor:
    """Attention pooling of N x C x h x w features into N x heads x h x w maps (docs/method.md §4.3).

    The C channels are split in order into ``heads`` contiguous groups whose sizes differ by at
    most one, the first ``C % heads`` groups one channel larger (``torch.tensor_split``; 2048 ->
    342, 342, 341, 341, 341, 341). For group k with keys K_k (c_k x P positions) the query is
    q_k = mean_P K_k and the map is softmax_P(q_k^T K_k / sqrt(c_k)). Computed in float32.
    """
    keys = features.float().flatten(2)
    maps = []
    for group in torch.tensor_split(keys, heads, dim=1):
        query = group.mean(dim=2, keepdim=True)
        logits = (query * group).sum(dim=1) / math.sqrt(group.shape[1])
        maps.append(logits.softmax(dim=-1))
    return torch.stack(maps, dim=1).unflatten(2, features.shape[-2:])


def _timm_model(name: str, kind: type[_Model], **kwargs: Any) -> _Model:
    """``timm.create_model(name)`` without pretrained weights, checked to be the class used below."""
    model = timm.create_model(name, pretrained=False, **kwargs)
    if not isinstance(model, kind):
        raise TypeError(f"timm built a {type(model).__name__} for {name}, not a {kind.__name__}")
    return model


def _placement(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and dtype of a module's weights (its first parameter's)."""
    weight = next(module.parameters())
    return weight.device, weight.dtype


def _preview(keys: list[str]) -> str:
    """The first few of ``keys`` for an error message, with a count of the rest."""
    shown = ", ".join(keys[:_KEY_PREVIEW])
    rest = len(keys) - _KEY_PREVIEW
    return f"{shown} (+{rest} more)" if rest > 0 else shown


def _load_strict(backbone: nn.Module, path: str | os.PathLike, description: str) -> None:
    """Load a safetensors state dict into ``backbone`` with exactly its keys and shapes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DINO weights not found: {path}")
    state = load_file(path)
    expected = backbone.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys: {_preview(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys: {_preview(unexpected)}")
        raise ValueError(f"{path} is not {description}; " + "; ".join(problems))
    wrong_shapes = [
        f"{key} {tuple(state[key].shape)} (expected {tuple(tensor.shape)})"
        for key, tensor in expected.items()
        if state[key].shape != tensor.shape
    ]
    if wrong_shapes:
        raise ValueError(f"{path} is not {description}; wrong shapes: {_preview(wrong_shapes)}")
    backbone.load_state_dict(state, strict=True)


class DinoResNet50Attention(nn.Module):
    """DINO ResNet-50 "heads" as attention pooling over layer4 (docs/method.md §4)."""

    def __init__(self, attention_size: int = DEFAULT_ATTENTION_SIZE) -> None:
        super().__init__()
        self.attention_size = attention_size
        self.backbone = _timm_model("resnet50", ResNet, num_classes=0, output_stride=RESNET_OUTPUT_STRIDE)
        self.backbone.to(memory_format=torch.channels_last)
        self.backbone.requires_grad_(False)
        self.eval()

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load a torchvision-keyed ResNet-50 trunk (conv1 .. layer4, no ``fc.*``) strictly."""
        _load_strict(self.backbone, path, "a torchvision ResNet-50 trunk state dict without fc.*")

    def forward(self, lr: Tensor) -> Tensor:
        """LR N x 3 x h x w in [-1, 1] -> N x 6 x h' x w' float32 maps, each summing to 1.

        h', w' are ``attention_input_size(..., multiple=16)`` divided by 16. The backbone runs
        channels-last (~25% faster on a CPU) in the dtype and on the device of its weights.
        """
        device, dtype = _placement(self.backbone)
        x = prepare_input(lr, self.attention_size, RESNET_OUTPUT_STRIDE, device, dtype)
        features = self.backbone.forward_features(x.contiguous(memory_format=torch.channels_last))
        return attention_pooling(features, ATTENTION_HEADS)


class DinoViTAttention(nn.Module):
    """DINO ViT-S/8 or S/16: CLS-token attention of the last block, one map per head.

    timm's own weight initialisation is skipped (2-3 s on a CPU) since ``load_weights`` replaces it.
    The last block's ``fused_attn`` is switched off so that timm computes the softmax matrix
    explicitly; a forward hook on that block's ``attn_drop`` (whose input is the post-softmax
    B x heads x T x T matrix; dropout is identity in eval) reads it during ``forward_features``.
    """

    def __init__(self, patch_size: int, attention_size: int = DEFAULT_ATTENTION_SIZE) -> None:
        super().__init__()
        if patch_size not in VIT_PATCH_SIZES:
            raise ValueError(f"patch_size must be one of {VIT_PATCH_SIZES}, got {patch_size!r}")
        self.patch_size = patch_size
        self.attention_size = attention_size
        self.backbone = _timm_model(
            f"vit_small_patch{patch_size}_224",
            VisionTransformer,
            num_classes=0,
            dynamic_img_size=True,
            weight_init="skip",
        )
        # timm declares fused_attn Final (for TorchScript); switching it off per module is supported.
        self._last_attention().fused_attn = False  # type: ignore[misc]
        self.backbone.requires_grad_(False)
        self.eval()

    def _last_attention(self) -> Attention:
        """The attention layer of the last block, whose softmax the maps are read from."""
        attention = self.backbone.blocks[-1].attn
        if not isinstance(attention, Attention):
            raise TypeError(f"the last ViT block's attention is a {type(attention).__name__}, not timm's Attention")
        return attention

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load timm-keyed ViT-S weights (as ``timm/vit_small_patch{8,16}_224.dino``) strictly."""
        description = f"a timm vit_small_patch{self.patch_size}_224 state dict without head"
        _load_strict(self.backbone, path, description)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid (rows, columns) of the maps for an LR image of ``height`` x ``width``."""
        size = attention_input_size(height, width, self.attention_size, self.patch_size)
        return size[0] // self.patch_size, size[1] // self.patch_size

    def cls_attention(self, lr: Tensor) -> Tensor:
        """N x 6 x (1 + patches) float32 softmax rows of the CLS query in the last block.

        Column 0 is the CLS token itself, then the patches in row-major order; each row sums to 1.
        """
        device, dtype = _placement(self.backbone)
        x = prepare_input(lr, self.attention_size, self.patch_size, device, dtype)
        attention = self._last_attention()
        captured: list[Tensor] = []
        handle = attention.attn_drop.register_forward_hook(lambda _module, inputs, _output: captured.append(inputs[0]))
        try:
            self.backbone.forward_features(x)
        finally:
            handle.remove()
        if len(captured) != 1 or captured[0].shape[1] != attention.num_heads:
            raise RuntimeError("the last ViT block did not expose its softmax (fused_attn on?)")
        return captured[0][:, :, 0, :].float()

    def forward(self, lr: Tensor) -> Tensor:
        """LR N x 3 x h x w in [-1, 1] -> N x 6 x h' x w' CLS-to-patch attention (CLS dropped).

        Each head sums to at most 1 (1 minus the CLS token's self-attention).
        """
        rows = self.cls_attention(lr)
        prefix = self.backbone.num_prefix_tokens
        return rows[:, :, prefix:].unflatten(2, self.grid_size(lr.shape[-2], lr.shape[-1]))


def build_attention_module(
    method: str, attention_size: int = DEFAULT_ATTENTION_SIZE
) -> DinoResNet50Attention | DinoViTAttention:
    """An untrained attention module for a DINO method (``METHODS``); ``load_weights`` fills it."""
    if method == "dino-resnet50":
        return DinoResNet50Attention(attention_size=attention_size)
    if method in _VIT_METHODS:
        return DinoViTAttention(_VIT_METHODS[method], attention_size=attention_size)
    raise ValueError(f"unknown DINO attention method {method!r}; expected one of {', '.join(METHODS)}")


def dino_backbone(
    method: str,
    weights: str | os.PathLike,
    device: torch.device | str = "cpu",
    attention_size: int = DEFAULT_ATTENTION_SIZE,
) -> DinoResNet50Attention | DinoViTAttention:
    """A loaded, eval-mode DINO attention module: dino-resnet50 | dino-vits8 | dino-vits16."""
    if method not in METHODS:
        known = ", ".join(METHODS)
        raise ValueError(f"unknown DINO attention method {method!r}; expected one of {known}")
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"DINO weights for {method} not found: {path}")
    module = build_attention_module(method, attention_size)
    module.load_weights(path)
    return module.to(device).eval()


def write_random_weights(method: str, path: str | os.PathLike, seed: int = 0) -> Path:
    """Write randomly initialised weights in the layout ``method`` loads (for tests and benchmarks)."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if method == "dino-resnet50":
            import torchvision

            state = torchvision.models.resnet50().state_dict()
            state = {key: value for key, value in state.items() if not key.startswith("fc.")}
        elif method in _VIT_METHODS:
            patch = _VIT_METHODS[method]
            state = timm.create_model(f"vit_small_patch{patch}_224", pretrained=False, num_classes=0).state_dict()
        else:
            raise ValueError(f"{method!r} is not a DINO method")
    finally:
        torch.random.set_rng_state(generator_state)
    save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    return Path(path)
