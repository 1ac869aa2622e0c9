import subprocess
import sys

import pytest

from yoda_sr import __version__


def run_cli(*args, code: str | None = None):
    command = [sys.executable, "-c", code or "from yoda_sr.cli import main; main()", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_version_answers_without_importing_torch():
    code = "import sys; from yoda_sr.cli import main\ntry:\n    main()\nfinally:\n    print('torch' in sys.modules)"
    result = run_cli("--version", code=code)
    assert result.returncode == 0
    assert result.stdout.splitlines() == [f"yoda-sr {__version__}", "False"]


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("upscale", "attention", "train", "evaluate", "checkpoints"):
        assert command in result.stdout


@pytest.mark.parametrize(
    "args",
    [["upscale", "face.png", "--scael", "4"], ["train"], ["evaluate", "--data"], ["checkpoints", "frobnicate"]],
)
def test_usage_errors_are_one_line_and_exit_2(args):
    result = run_cli(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("yoda-sr: error:")
    assert "Traceback" not in result.stderr
