"""Outputs that a refactoring must keep byte for byte: sha256 of four `yoda-sr upscale` runs.

The runs cover each path through the sampler: the embedded default at its defaults (block-sparse
YODA), the same with ``--sparse off`` (dense masked sampling), the embedded ResShift model, and a
streamed tile run (``--stream on --tile 128``). Each writes the bundled sample's 4x upscale at seed 0
through the CLI, in a fresh process. Prints a Markdown table; ``--record FILE`` stores the hashes,
``--check FILE`` compares with stored ones and exits 1 on any difference.

    python bench/identity.py [--record FILE | --check FILE]

Hashes are of this machine's float arithmetic: compare runs made on one machine (and one torch
build), e.g. before and after a change.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "yoda_sr" / "samples" / "astronaut.png"
RUNS: dict[str, list[str]] = {
    "default": [],
    "sparse off": ["--sparse", "off"],
    "resshift": ["--model", "yoda-resshift-x4"],
    "streamed tiles": ["--stream", "on", "--tile", "128"],
}


def run(name: str, flags: list[str], folder: Path) -> str:
    out = folder / f"{name.replace(' ', '-')}.png"
    command = [sys.executable, "-m", "yoda_sr", "upscale", str(SAMPLE), "--seed", "0", "-o", str(out), *flags]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--record", type=Path, help="store the hashes in this JSON file")
    group.add_argument("--check", type=Path, help="compare with the hashes in this JSON file")
    args = parser.parse_args()
    expected = json.loads(args.check.read_text()) if args.check else {}
    with tempfile.TemporaryDirectory() as folder:
        hashes = {name: run(name, flags, Path(folder)) for name, flags in RUNS.items()}
    print("| run | flags | sha256 | " + ("same |" if expected else ""))
    print("| --- | --- | --- | " + ("--- |" if expected else ""))
    for name, digest in hashes.items():
        same = "" if not expected else (" yes |" if expected.get(name) == digest else " **no** |")
        print(f"| {name} | `{' '.join(RUNS[name]) or '(defaults)'}` | `{digest[:16]}` |{same}")
    if args.record:
        args.record.write_text(json.dumps(hashes, indent=2) + "\n")
    return int(bool(expected) and expected != hashes)


if __name__ == "__main__":
    sys.exit(main())
