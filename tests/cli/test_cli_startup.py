"""`svgen --help` / `--version` start without heavy imports; every command has a summary and a docstring."""
from __future__ import annotations

import subprocess
import sys

import click
import pytest

from svgen.cli.main import COMMANDS, SUMMARIES, cli

HEAVY = ("torch", "numpy", "scipy", "dlib", "cv2", "h5py", "PIL", "imageio_ffmpeg")


def _imported_modules(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``svgen ARGS`` in a fresh interpreter with ``-X importtime``; (result, top-level modules)."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "svgen.cli.main", *args],
                       capture_output=True, text=True, timeout=120)
    names = set()
    for line in r.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if not name.startswith("imported"):  # the header row
                names.add(name.split(".")[0])
    return r, names


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("animate", "--help")])
def test_help_and_version_import_nothing_heavy(args):
    r, names = _imported_modules(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "click" in names                         # the parse really was recorded
    assert not names & set(HEAVY), sorted(names & set(HEAVY))
    if args == ("--version",):
        assert r.stdout.strip() == "svgen, version 0.1.0"


def test_help_lists_every_command_with_its_summary():
    r = subprocess.run([sys.executable, "-m", "svgen.cli.main", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0
    for name, summary in SUMMARIES.items():
        assert f"{name}" in r.stdout and summary in " ".join(r.stdout.split()), name


def test_every_command_has_a_summary_and_a_docstring():
    assert list(SUMMARIES) == list(COMMANDS)
    ctx = click.Context(cli)
    for name in COMMANDS:
        summary = SUMMARIES[name]
        assert summary and "\n" not in summary and len(summary) <= 60, (name, summary)
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
        assert command.help and command.help.strip(), f"{name} has no docstring"
