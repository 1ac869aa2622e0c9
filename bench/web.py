"""What the web page costs over the command line, for the bundled sample (128 -> 512, default model).

CLI: `yoda-sr upscale astronaut.png --seed 0 --overwrite --json`, one process per upscale (start-up,
imports and model load included, as a user pays them from a shell). Page: the page's button (its
event, through gradio_client, on a warm `yoda-sr web`: upload, queue, upscale, the slider's images,
attention map and timeline, and fetching them all), and the API endpoint `upscale` (upload, queue,
upscale, download of the written file). Each row gives the median wall seconds per upscale over
``--repeats`` runs, the upscale itself (the record's ``seconds``) and the rest: what the route
around the same computation costs. Prints a Markdown table.

    python bench/web.py [--repeats 3] [--port 7870]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "yoda_sr" / "samples" / "astronaut.png"


def cli_run(photo: Path) -> tuple[float, float]:
    """(wall seconds, upscale seconds) of one CLI process."""
    command = [sys.executable, "-m", "yoda_sr", "upscale", str(photo), "--seed", "0", "--overwrite", "--json"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    wall = time.perf_counter() - start
    return wall, float(json.loads(done.stdout.splitlines()[-1])["seconds"])


def start_server(port: int) -> subprocess.Popen[str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "yoda_sr", "web", "--port", str(port)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert server.stderr is not None
    for line in server.stderr:
        if "serving http://" in line:
            return server
    raise SystemExit("yoda-sr web did not start")


PAGE_FORM = ["yoda-srdiff-x4", 4, 5, "ddpm", 0, "sift", 0.3, 0.3, "auto", "on", "auto", "auto", 32, 0, "auto"]
"""The page's form as it opens (the default model's settings)."""


def measure(folder: Path, repeats: int, port: int) -> dict[str, list[tuple[float, float | None]]]:
    """(wall, upscale) seconds of each route, taken in turns so that other load on the machine
    weighs on every route alike; the server gets one warm-up call first."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from gradio_client import Client, handle_file

    photo = folder / "astronaut.png"
    shutil.copyfile(SAMPLE, photo)
    server = start_server(port)
    runs: dict[str, list[tuple[float, float | None]]] = {"cli": [], "page": [], "api": []}
    try:
        client = Client(f"http://127.0.0.1:{port}/", analytics_enabled=False, verbose=False, download_files=str(folder))
        upload = handle_file(str(photo))
        client.predict(upload, api_name="/upscale")  # warm-up
        for _ in range(repeats):
            runs["cli"].append(cli_run(photo))
            start = time.perf_counter()
            record = client.predict([upload], *PAGE_FORM, "bicubic", api_name="/page")[6]
            runs["page"].append((time.perf_counter() - start, float(json.loads(record)["seconds"])))
            start = time.perf_counter()
            client.predict(upload, api_name="/upscale")
            runs["api"].append((time.perf_counter() - start, None))
    finally:
        server.send_signal(2)
        server.wait(timeout=60)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--port", type=int, default=7870)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        runs = measure(Path(folder), args.repeats, args.port)
    print(f"{os.cpu_count()} CPUs; median of {args.repeats} runs, seconds per upscale of the 128 px sample\n")
    print("| route | wall | upscale (record) | rest |")
    print("| --- | ---: | ---: | ---: |")
    names = {
        "cli": "CLI, one process per image",
        "page": "page button (/page), warm server",
        "api": "API endpoint (/upscale), warm server",
    }
    for key, name in names.items():
        wall = statistics.median(run[0] for run in runs[key])
        works = [run[1] for run in runs[key] if run[1] is not None]
        if works:
            work = statistics.median(works)
            print(f"| {name} | {wall:.2f} | {work:.2f} | {wall - work:.2f} |")
        else:
            print(f"| {name} | {wall:.2f} | - | - |")


if __name__ == "__main__":
    main()
