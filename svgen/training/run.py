"""The run object every trainer starts from: the run folder, its config, the resume policy, the
overwrite guard, ``log.jsonl`` (+ TensorBoard) and the checkpoints (``latest.pt`` replaced atomically,
numbered snapshots).

Resume policy. A resumed run keeps the settings it was started with, except the fields its config
dataclass declares with :func:`from_invocation`: those (length, paths, device, logging) come from the
new invocation, always or only when given. Fields added to a config after runs were saved declare,
with ``legacy=``, the value those older runs used (:func:`saved_config`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable, Optional, Type, TypeVar

import torch

from svgen.training.log import TrainLog
from svgen.training.state import load_resume_checkpoint
from svgen.utils.config import config_from_dict
from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.rundir import RunDir, load_checkpoint

T = TypeVar("T")
_RESUME = "svgen_resume"      # field metadata: "always" | "if_given"
_LEGACY = "svgen_legacy"      # field metadata: the value of runs saved before the field existed


def from_invocation(default: Any = dataclasses.MISSING, *, if_given: bool = False,
                    legacy: Any = dataclasses.MISSING, **kw: Any) -> Any:
    """A config field a resumed run takes from the new invocation instead of its checkpoint
    (``if_given``: only when the invocation sets it, i.e. not None or empty)."""
    meta = {_RESUME: "if_given" if if_given else "always"}
    if legacy is not dataclasses.MISSING:
        meta[_LEGACY] = legacy
    return dataclasses.field(default=default, metadata=meta, **kw)


def legacy_default(default: Any, legacy: Any) -> Any:
    """A config field whose value in runs saved before it existed was ``legacy`` (not ``default``)."""
    return dataclasses.field(default=default, metadata={_LEGACY: legacy})


def saved_config(cls: Type[T], data: dict) -> T:
    """Rebuild a saved config; fields missing from ``data`` take their declared ``legacy`` value."""
    cfg = config_from_dict(cls, data)
    for f in dataclasses.fields(cls):
        if f.name not in data and _LEGACY in f.metadata:
            setattr(cfg, f.name, f.metadata[_LEGACY])
    return cfg


def resumed_config(saved: T, given: T) -> T:
    """``saved`` with the fields declared :func:`from_invocation` taken from ``given``."""
    out = dataclasses.replace(saved)
    for f in dataclasses.fields(saved):
        rule = f.metadata.get(_RESUME)
        value = getattr(given, f.name)
        if rule == "always" or (rule == "if_given" and value is not None and value != ""):
            setattr(out, f.name, value)
    return out


def check_run_folder(out: PathLike, resume: bool) -> Path:
    """The overwrite guard: a new run refuses a folder that already holds a checkpoint, a resumed run
    needs one. Returns the path of ``latest.pt``."""
    latest = Path(out) / "checkpoints" / "latest.pt"
    if resume and not latest.exists():
        raise SvgenError("--resume given but no checkpoint exists", latest)
    if not resume and latest.exists():
        raise SvgenError("output folder already holds a training run; pass --resume to continue it "
                         "or choose another --out", out)
    return latest


class Run:
    """A training run's folder, opened for a new run or for ``--resume``.

    A new run refuses a folder that already holds a checkpoint (no silent overwrite); a resumed
    run needs one. Only the main process (``main``) writes; the others get ``None`` folders and
    their writes are no-ops, so every process can call the same methods.
    """

    def __init__(self, out: PathLike, resume: bool, main: bool = True, tensorboard: bool = True):
        self.root = Path(out)
        self.resume = bool(resume)
        self.main = main
        self.dir = RunDir(self.root) if main else None
        check_run_folder(self.root, self.resume)
        self.log = TrainLog(self.root, tensorboard=tensorboard) if main else None

    # -- folders ---------------------------------------------------------------------------
    @property
    def latest(self) -> Path:
        return self.root / "checkpoints" / "latest.pt"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    # -- state -----------------------------------------------------------------------------
    def load_latest(self, fmt: Optional[str] = None, model: Optional[str] = None, required: Iterable[str] = (),
                    what: str = "", map_location: str | torch.device = "cpu") -> dict:
        """``latest.pt`` of the run being resumed; with ``fmt`` its kind is checked
        (:func:`~svgen.training.state.load_resume_checkpoint`)."""
        if fmt is None:
            return load_checkpoint(self.latest, map_location=map_location)
        return load_resume_checkpoint(self.latest, fmt, model=model, required=required, what=what,
                                      map_location=map_location)

    def save_config(self, cfg: Any) -> None:
        """``config.json`` (a dataclass or a plain dict), beside the checkpoints."""
        if self.main:
            self.dir.save_config(cfg)

    def save_checkpoint(self, state: dict, snapshot_name: Optional[str] = None) -> None:
        """Replace ``latest.pt`` atomically; also keep ``checkpoints/<snapshot_name>`` if given."""
        if self.main:
            self.dir.save_checkpoint(state, snapshot_name)

    def log_step(self, **fields: Any) -> None:
        if self.main:
            self.log.log(**fields)

    def log_metrics(self, **fields: Any) -> None:
        if self.main:
            self.dir.metrics.log(**fields)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
