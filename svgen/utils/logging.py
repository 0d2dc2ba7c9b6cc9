"""JSONL logging: one JSON object per line, flushed at once so a killed run keeps its log."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from svgen.utils.errors import PathLike


class JsonlLogger:
    """Append-only JSON-lines log (``log.jsonl`` / ``metrics.jsonl`` in a run directory)."""

    def __init__(self, path: PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3)}
        record.update({k: _plain(v) for k, v in fields.items()})
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def _plain(v: Any) -> Any:
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return v.item()
    if hasattr(v, "tolist"):
        return v.tolist()
    return v


def read_jsonl(path: PathLike) -> list[dict]:
    """Read a JSONL file, skipping a torn last line left by a crash."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return out
