"""DINO weights -> the safetensors layouts ``models.dino`` loads.

``dino-resnet50-pth``: facebookresearch/dino's ``dino_resnet50_pretrain.pth`` is a torchvision
ResNet-50 state dict without ``fc.*``; prefixes left by training wrappers (``module.``,
``backbone.``) are stripped and any ``fc.*`` dropped. ``timm``: timm's ViT-S DINO weights
(``vit_small_patch{8,16}_224.dino``) are used as they are, minus a classifier ``head.*`` if present.
"""

from __future__ import annotations

from torch import Tensor

RESNET_FORMAT = "dino-resnet50-pth"
TIMM_FORMAT = "timm"
_WRAPPER_PREFIXES = ("module.", "backbone.")


def looks_like_resnet(state: dict[str, Tensor]) -> bool:
    keys = {key.split(".", 1)[1] if key.startswith(_WRAPPER_PREFIXES) else key for key in state}
    return "conv1.weight" in keys and "layer4.2.conv3.weight" in keys


def looks_like_vit(state: dict[str, Tensor]) -> bool:
    return "patch_embed.proj.weight" in state and "blocks.0.attn.qkv.weight" in state


def vit_method(state: dict[str, Tensor]) -> str | None:
    """``dino-vits8`` / ``dino-vits16`` from the patch size, or None for another ViT."""
    weight = state["patch_embed.proj.weight"]
    if weight.shape[0] != 384:
        return None
    return {8: "dino-vits8", 16: "dino-vits16"}.get(int(weight.shape[-1]))


def resnet_tensors(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A torchvision ResNet-50 trunk: wrapper prefixes stripped, ``fc.*`` dropped."""
    result = {}
    for key, value in state.items():
        for prefix in _WRAPPER_PREFIXES:
            key = key.removeprefix(prefix)
        if not key.startswith("fc."):
            result[key] = value
    return result


def vit_tensors(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """timm ViT weights without a classifier head."""
    return {key: value for key, value in state.items() if not key.startswith("head.")}
