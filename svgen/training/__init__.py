"""The one training skeleton every trainer is built on (read top to bottom in this order):

- :mod:`~svgen.training.run`: the run folder, config, resume policy, overwrite guard, logs, checkpoints;
- :mod:`~svgen.training.state`: the ``--resume`` checkpoint check and restoring the named stateful parts;
- :mod:`~svgen.training.loop`: :func:`~svgen.training.loop.fit`, the outer loop of the step-counted
  trainers (progress bar, log / preview / snapshot cadences in steps, the final snapshot);
- :mod:`~svgen.training.dist`: data-parallel processes (torchrun / gloo on CPU) and gradient averaging;
- :mod:`~svgen.training.optim`: lazy-regularised Adam and gradient scrubbing;
- :mod:`~svgen.training.ema`: the weight EMA and its two published schedules;
- :mod:`~svgen.training.log`: ``log.jsonl`` plus TensorBoard when it is installed.

Each stage keeps only its networks, its data and its ``train_step``.
"""
from svgen.training.dist import Dist, check_consistency, init_distributed, init_distributed_on, reduce_gradients
from svgen.training.ema import half_life_beta, update_ema, warmup_beta
from svgen.training.log import TrainLog
from svgen.training.loop import fit
from svgen.training.optim import lazy_regularised_adam, optimizer_step, scrub_gradients
from svgen.training.run import (Run, check_run_folder, from_invocation, legacy_default, resumed_config,
                                saved_config)
from svgen.training.state import load_resume_checkpoint, restore, state_dicts

__all__ = ["Run", "check_run_folder", "from_invocation", "legacy_default", "resumed_config", "saved_config", "Dist",
           "init_distributed", "init_distributed_on", "reduce_gradients", "check_consistency",
           "lazy_regularised_adam", "optimizer_step", "scrub_gradients", "half_life_beta", "warmup_beta", "update_ema",
           "TrainLog", "fit", "load_resume_checkpoint", "restore", "state_dicts"]
