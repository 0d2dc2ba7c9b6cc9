"""``--gpus N`` for the training commands: the command starts itself again under ``torchrun`` with N
local processes (gloo on CPU, nccl on CUDA), each of which runs the command as a worker of the
process group. Users on clusters can launch ``torchrun ... -m svgen.cli.main <command> ...`` themselves."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import click

from svgen.cli.common import positive_int


def gpus_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--gpus N`` (processes, one per GPU) to a training command."""
    return click.option("--gpus", type=int, default=1, show_default=True, callback=positive_int,
                        help="Processes (one per GPU; CPU processes with --device cpu), launched via "
                             "torchrun; --batch is the total over all processes.")(func)


def in_torchrun() -> bool:
    """True in a process that ``torchrun`` started (it sets WORLD_SIZE and RANK)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def check_gpus(gpus: int, device: str) -> None:
    """Usage error when ``gpus`` CUDA processes are asked for and fewer GPUs are visible."""
    import torch

    from svgen.utils.device import select_device

    if gpus > 1 and not in_torchrun() and select_device(device).type == "cuda" \
            and gpus > torch.cuda.device_count():
        raise click.BadParameter(f"{gpus} processes need {gpus} GPUs, {torch.cuda.device_count()} visible",
                                 param_hint="--gpus")


def relaunch_under_torchrun(gpus: int, out: Path | str) -> bool:
    """With ``gpus`` > 1 outside torchrun: run this very command (same options) in ``gpus`` processes
    under torchrun and return True when they are done; otherwise return False (run in this process)."""
    if gpus <= 1 or in_torchrun():
        return False
    ctx = click.get_current_context()
    launch_torchrun(gpus, [ctx.info_name, *argv_of(ctx)], Path(out))
    return True


def argv_of(ctx: click.Context) -> list[str]:
    """The options of the running command as a command line (the parsed values, so defaults and
    callbacks give the same result again)."""
    argv: list[str] = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if not isinstance(param, click.Option):
            argv += [str(v) for v in (value if isinstance(value, (list, tuple)) else (value,)) if v is not None]
        elif param.is_flag and param.secondary_opts:
            argv.append(param.opts[0] if value else param.secondary_opts[0])
        elif param.is_flag:
            argv += [param.opts[0]] if value else []
        elif param.multiple:
            for v in value or ():
                argv += [param.opts[0], str(v)]
        elif value is not None:
            argv += [param.opts[0], str(value)]
    return argv


def launch_torchrun(nproc: int, argv: list[str], out: Path) -> None:
    """Run ``svgen <argv>`` under ``torch.distributed.run`` with ``nproc`` local processes."""
    from svgen.utils.errors import SvgenError

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "svgen.cli.main", *argv]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    rc = subprocess.call(cmd, env=env)
    if rc != 0:
        raise SvgenError(f"distributed training failed (torchrun exit status {rc}); see the "
                         "messages above", out)
