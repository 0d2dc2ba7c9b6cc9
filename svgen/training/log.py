"""Training logs: ``log.jsonl`` (one JSON object per logged step) and, when the optional ``tensorboard``
package is installed, TensorBoard event files in the run folder (the convention of stylegan2-ada and
MoCoGAN-HD: ``tensorboard --logdir runs/<name>``)."""
from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any, Optional

from svgen.utils.logging import JsonlLogger


def tensorboard_writer(folder: Path) -> Optional[Any]:
    """A ``SummaryWriter`` into ``folder``, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:        # torch raises ImportError when the tensorboard package is absent
        return None
    return SummaryWriter(log_dir=str(folder))


class TrainLog:
    """Writes every record to ``log.jsonl`` and its numeric fields to TensorBoard (x axis: ``step``)."""

    def __init__(self, root: Path, tensorboard: bool = True):
        self.jsonl = JsonlLogger(Path(root) / "log.jsonl")
        self.tb = tensorboard_writer(Path(root)) if tensorboard else None

    def log(self, **fields: Any) -> None:
        self.jsonl.log(**fields)
        step = fields.get("step")
        if self.tb is None or not isinstance(step, numbers.Integral):
            return
        for k, v in fields.items():
            if k != "step" and isinstance(v, numbers.Real) and not isinstance(v, bool):
                self.tb.add_scalar(k, float(v), global_step=int(step))
        self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
