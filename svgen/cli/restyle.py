"""``svgen finetune-decoder``: style transfer by fine-tuning a generator's synthesis network."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from svgen.cli.common import common_options, positive_int
from svgen.utils.checks import POSITIVE
from svgen.utils.errors import SvgenError


@click.command("finetune-decoder")
@click.option("--generator", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The generator to restyle (generator.pt, NVIDIA .pkl or rosinality .pt).")
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="Style set: an image zip (aligned.zip, dataset_tool zip) or a folder of images.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="G_style.pt to write; the run folder (config.json, log.jsonl, checkpoints/, samples/) "
                   "is G_style.finetune/ beside it.")
@click.option("--kimg", type=POSITIVE, default=None, help="Length in thousands of style images shown.")
@click.option("--steps", type=int, default=None, callback=positive_int,
              help="Length in optimiser steps [default: 1000; on --resume: the run's own].")
@click.option("--freeze-coarse", type=click.IntRange(0, None), default=0, show_default=True,
              help="Keep the constant and convolutions of the first N synthesis blocks (4x4, 8x8, ...: pose and "
                   "face shape) bit-identical; their ToRGB layers still learn the colours.")
@click.option("--batch", type=int, default=None, callback=positive_int,
              help="Images per step [default: the generator's training preset's].")
@click.option("--ada/--no-ada", default=True, show_default=True, help="Adaptive discriminator augmentation.")
@click.option("--lr", type=POSITIVE, default=None, help="Adam learning rate [default: the preset's].")
@click.option("--snap", "snap_steps", type=int, default=250, show_default=True, callback=positive_int,
              help="Steps between checkpoints, sample grids and the style distance.")
@click.option("--resume", is_flag=True, help="Continue the run of --out from its checkpoints/latest.pt.")
@common_options
def finetune_decoder(generator: Path, data: Path, out: Path, kimg: Optional[float], steps: Optional[int],
                     freeze_coarse: int, batch: Optional[int], ada: bool, lr: Optional[float], snap_steps: int,
                     resume: bool, seed: int, device: str) -> None:
    """Restyle a generator: fine-tune its synthesis network on a small style set (mapping frozen)."""
    from svgen.stage1_image_gan.finetune import FinetuneConfig, finetune_decoder as run, run_folder

    if kimg is not None and steps is not None:
        raise SvgenError("give --kimg or --steps, not both")
    path = run(FinetuneConfig(generator=str(generator), data=str(data), out=str(out), steps=steps, kimg=kimg,
                              freeze_coarse=freeze_coarse, batch=batch, ada=ada, lr=lr, snap_steps=snap_steps,
                              seed=seed, device=device, resume=resume))
    click.echo(f"wrote {path} (run folder {run_folder(path)})")
