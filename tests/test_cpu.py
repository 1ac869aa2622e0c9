"""The CPU fast path: process settings, the channels-last denoiser, batched tiles and --compile."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from yoda_sr.api import Settings, Upscaler
from yoda_sr.runtime.cpu import ALLOCATOR_VARIABLES

from conftest import cli, photo, save_tiny_checkpoint


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def python(code: str, **env: str) -> str:
    """Run ``code`` in a fresh interpreter (process settings belong to a process); its stdout."""
    clean = {key: value for key, value in os.environ.items() if key not in (*ALLOCATOR_VARIABLES, "OMP_WAIT_POLICY")}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env={**clean, **env}, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_allocator_reuses_freed_memory_instead_of_faulting_it_in_again():
    code = """
        import resource, sys
        from yoda_sr.runtime.cpu import tune_allocator
        tuned = tune_allocator() if sys.argv[-1] == "tune" else False
        bytearray(64 << 20)  # the first block is faulted in either way
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            bytearray(64 << 20)  # allocated, touched (zeroed) and freed
        print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
    tuned, faults = python(code.replace("sys.argv[-1]", '"tune"')).split()
    plain, plain_faults = python(code).split()
    assert tuned == "True" and plain == "False"
    assert int(plain_faults) > 5 * 16384 * 0.9  # every 64 MiB block mapped and faulted in anew
    assert int(faults) < 1000
    # A user's own choice wins: nothing is tuned when any allocator variable is set.
    assert (
        python(code.replace("sys.argv[-1]", '"tune"'), MALLOC_ARENA_MAX="2", MALLOC_TOP_PAD_="0").split()[0] == "False"
    )


def test_the_cli_entry_point_tunes_the_allocator_and_leaves_threads_alone(tmp_path, model_file):
    image = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(photo()[200:216, 180:196])).save(image)
    code = f"""
        import os, sys
        import yoda_sr.runtime.cpu as cpu
        from yoda_sr.cli import main
        try:
            main(["upscale", {str(image)!r}, "-o", {str(tmp_path / "out.png")!r}, "--model", {str(model_file)!r},
                  "--steps", "1", "-q"])
        except SystemExit as exit:
            assert not exit.code, exit.code
        import torch
        print(os.environ.get("OMP_WAIT_POLICY"), cpu._allocator_tuned, torch.get_num_threads() >= 1)
    """
    assert python(code) == "None True True"  # the allocator tuned; the thread policy left as it was
    assert (tmp_path / "out.png").exists()


def test_cpu_upscaler_runs_channels_last_within_a_level_of_the_default_layout(model_file):
    fast = Upscaler.from_pretrained(model_file, device="cpu")
    plain = Upscaler.from_pretrained(model_file, device="cpu", channels_last=False)
    assert fast.model.unet.final_conv[1].weight.is_contiguous(memory_format=torch.channels_last)
    assert plain.model.unet.final_conv[1].weight.is_contiguous()
    image = np.ascontiguousarray(photo()[200:232, 180:228])
    settings = Settings(steps=3, tile=64, tile_overlap=16)  # 128 x 192: 6 tiles
    a = fast.upscale(image, seed=1, settings=settings).image.astype(int)
    b = plain.upscale(image, seed=1, settings=settings).image.astype(int)
    assert np.abs(a - b).max() <= 1


def test_batched_tiles_match_tile_by_tile_and_stay_independent_of_other_images(model_file):
    upscaler = Upscaler.from_pretrained(model_file, device="cpu")
    first, second = (np.ascontiguousarray(photo()[t : t + 32, 180:228]) for t in (200, 100))
    one_by_one = upscaler.upscale(first, seed=1, settings=Settings(steps=3, tile=64, tile_overlap=16)).image
    batched = Settings(steps=3, tile=64, tile_overlap=16, tile_batch=4)
    alone = upscaler.upscale(first, seed=1, settings=batched).image
    together = upscaler.upscale_batch([second, first], seeds=[2, 1], settings=batched)[1].image
    assert np.array_equal(alone, together)  # batches hold tiles of one image only
    assert np.abs(alone.astype(int) - one_by_one.astype(int)).max() <= 1


def counting_backend(graphs: list):
    def backend(graph_module, example_inputs):
        graphs.append([tuple(x.shape) for x in example_inputs if isinstance(x, torch.Tensor)])
        return graph_module.forward

    return backend


def test_compiled_denoiser_compiles_once_per_tile_shape_and_matches(model_file):
    from yoda_sr.runtime.compiled import CompiledDenoiser

    upscaler = Upscaler.from_pretrained(model_file, device="cpu")
    # Dense steps only: block-sparse crops change shape from step to step and run uncompiled.
    settings = Settings(steps=2, tile=64, tile_overlap=16, sparse=False)
    image = np.ascontiguousarray(photo()[200:232, 180:228])  # 128 x 192 HR: 6 tiles of one shape
    reference = upscaler.upscale(image, seed=1, settings=settings).image
    graphs: list = []
    upscaler.denoise = CompiledDenoiser(upscaler.model, backend=counting_backend(graphs))
    compiled = upscaler.upscale(image, seed=1, settings=settings).image
    assert np.array_equal(compiled, reference)
    first = len(graphs)
    assert first >= 1 and len(upscaler.denoise.shapes) == 1
    other = np.ascontiguousarray(photo()[100:132, 100:148])  # another image of the same size
    upscaler.upscale(other, seed=2, settings=settings)
    assert len(graphs) == first  # reused: no recompilation


def test_compile_fails_soft_with_one_line(tmp_path, model_file, capsys, monkeypatch):
    from yoda_sr.runtime import compiled

    def broken(model, **_):
        def call(*args):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")

        return call

    monkeypatch.setattr(compiled.torch, "compile", broken)
    image = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(photo()[200:216, 180:196])).save(image)
    out = tmp_path / "out.png"
    assert cli("upscale", image, "-o", out, "--model", model_file, "--steps", "2", "--sparse", "off", "--compile") == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "--compile" in line]
    assert len(lines) == 1 and "No working C++ compiler" in lines[0] and "uncompiled" in lines[0]
    assert "more detail" not in err and "Traceback" not in err
    assert out.exists()


def test_a_bad_tile_batch_is_one_usage_line(tmp_path, model_file, capsys):
    image = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(photo()[200:216, 180:196])).save(image)
    assert cli("upscale", image, "--model", model_file, "--tile-batch", "0") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("yoda-sr: error: --tile-batch: must be a whole number")
    assert not (tmp_path / "in_x4.png").exists()
