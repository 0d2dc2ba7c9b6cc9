"""Run directories: ``config.json``, ``checkpoints/`` (atomic ``latest.pt`` + numbered snapshots),
``log.jsonl``, ``metrics.jsonl`` and ``samples/``; shared by every training loop."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import torch

from svgen.utils.config import config_to_dict
from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.io import ExclusiveLock, ensure_parent_writable, torch_save_atomic, write_json
from svgen.utils.logging import JsonlLogger

LOCK_NAME = ".svgen.lock"  # held (fcntl) by the process training into the folder


ZIP_MAGIC = b"PK\x03\x04"   # first bytes of a torch >= 1.6 checkpoint (a zip archive)


class RunDir:
    """A training run's folder. Creating it checks that it is writable and locks it for this
    process, so a second run into the same folder fails at once with one line."""

    def __init__(self, root: PathLike):
        self.root = Path(root)
        ensure_parent_writable(self.root / "config.json")
        self.lock = ExclusiveLock(self.root / LOCK_NAME, self.root, "run folder", per_process=True).acquire()
        self.checkpoints = self.root / "checkpoints"
        self.samples = self.root / "samples"
        self.checkpoints.mkdir(exist_ok=True)
        self.samples.mkdir(exist_ok=True)
        self.log = JsonlLogger(self.root / "log.jsonl")
        self.metrics = JsonlLogger(self.root / "metrics.jsonl")

    @property
    def latest(self) -> Path:
        return self.checkpoints / "latest.pt"

    def save_config(self, cfg: Any) -> None:
        data = config_to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
        write_json(self.root / "config.json", data)

    def save_checkpoint(self, state: dict, snapshot_name: Optional[str] = None) -> Path:
        """Atomically replace ``latest.pt``; also write ``checkpoints/<snapshot_name>`` if given."""
        torch_save_atomic(state, self.latest)
        if snapshot_name:
            torch_save_atomic(state, self.checkpoints / snapshot_name)
        return self.latest

    def load_latest(self, map_location: str | torch.device = "cpu") -> dict:
        """Load ``latest.pt`` for ``--resume`` (SvgenError when there is none)."""
        if not self.latest.exists():
            raise SvgenError("--resume given but no checkpoint exists", self.latest)
        return load_checkpoint(self.latest, map_location=map_location)


def load_checkpoint(path: PathLike, expect_format: Optional[str] = None,
                    map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """``torch.load(weights_only=True)`` with one-line errors and an optional format check.

    ``mmap``: the tensors stay in the file (copy-on-write pages, read on first use): an inference
    loader that adopts them as a module's weights holds them once, and a part never used (another
    network of the checkpoint) is never read into memory."""
    p = Path(path)
    if not p.is_file():
        raise SvgenError("checkpoint does not exist", p)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True, mmap=mmap and _is_zip(p))
    except Exception as exc:  # corrupt, truncated, pickled code, not a torch file
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise SvgenError(f"not a readable svgen checkpoint ({msg})", p) from None
    if not isinstance(ckpt, dict):
        raise SvgenError("not an svgen checkpoint (expected a dict)", p)
    if expect_format is not None and ckpt.get("format") != expect_format:
        found = ckpt.get("format", "unknown")
        raise SvgenError(f"expected a {expect_format!r} checkpoint, found format {found!r}", p)
    return ckpt


def _is_zip(path: Path) -> bool:
    """A torch >= 1.6 (zip) file, the only format ``torch.load(mmap=True)`` reads."""
    with open(path, "rb") as fh:
        return fh.read(4) == ZIP_MAGIC
