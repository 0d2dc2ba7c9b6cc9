"""Helpers for tests that run ``svgen`` in-process (importable because tests/ holds conftest.py)."""
from __future__ import annotations

from typing import Any

from svgen.cli.main import main


def run_cli(capsys: Any, *args: Any) -> tuple[int, str, str]:
    """Run ``svgen ARGS``; returns (exit status, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def ok_cli(capsys: Any, *args: Any) -> tuple[str, str]:
    """Run ``svgen ARGS`` and fail the test (showing stderr) unless it exits 0; returns (out, err)."""
    code, out, err = run_cli(capsys, *args)
    assert code == 0, f"svgen {' '.join(map(str, args))} exited {code}: {err}"
    return out, err
