"""``svgen train-image``: train StyleGAN2 (+ ADA) on an aligned-frame dataset."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import click

from svgen.cli.common import common_options, positive_int
from svgen.cli.distributed import launch_torchrun
from svgen.utils.checks import POSITIVE, UNIT_INTERVAL
from svgen.utils.errors import SvgenError

PRESETS = ("tiny", "paper256", "stylegan2", "auto")


@click.command("train-image")
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="Aligned-frame dataset (aligned.zip from `svgen preprocess`).")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Run folder: checkpoints/, samples/, log.jsonl, metrics.jsonl, generator.pt.")
@click.option("--preset", type=click.Choice(PRESETS), default=None,
              help="Network/training preset [default: auto; on --resume: the run's own].")
@click.option("--kimg", type=POSITIVE, default=None,
              help="Training length in thousands of real images [default: 200 for tiny, "
                   "else 25000; on --resume: the run's own].")
@click.option("--snap", "snap_kimg", type=POSITIVE, default=None,
              help="kimg between snapshots (checkpoint, samples, SWD) [default: 10 for tiny, else 200].")
@click.option("--batch", type=int, default=None, callback=positive_int,
              help="Total batch size over all processes [default: the preset's].")
@click.option("--aug", type=click.Choice(["ada", "noaug", "fixed"]), default="ada", show_default=True,
              help="Discriminator augmentation: adaptive p, none, or a fixed p (--p).")
@click.option("--p", "ada_p", type=UNIT_INTERVAL, default=0.0, show_default=True,
              help="Augmentation probability: initial (ada) or constant (fixed).")
@click.option("--mirror", is_flag=True, help="Add x-flipped copies of the frames.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from checkpoints/latest.pt.")
@click.option("--init", type=click.Path(path_type=Path), default=None,
              help="Start a new run from this generator's weights (svgen generator.pt, NVIDIA .pkl, "
                   "rosinality .pt; its D too when the file has one): transfer learning, e.g. from a "
                   "generator of many faces to your clip. Its preset is the run's; the image count, "
                   "optimisers and ADA start afresh.")
@click.option("--gpus", type=int, default=1, show_default=True, callback=positive_int,
              help="Processes (one per GPU; CPU processes with --device cpu), launched via torchrun.")
@click.option("--workers", type=click.IntRange(0, 64), default=0, show_default=True,
              help="Data loading worker processes per training process.")
@click.option("--metrics/--no-metrics", default=True, show_default=True,
              help="SWD to the real frames at each snapshot (metrics.jsonl).")
@common_options
def train_image(data: Path, out: Path, preset: Optional[str], kimg: Optional[float],
                snap_kimg: Optional[float], batch: Optional[int], aug: str, ada_p: float,
                mirror: bool, resume: bool, init: Optional[Path], gpus: int, workers: int, metrics: bool, seed: int,
                device: str) -> None:
    """Train StyleGAN2 (+ ADA) on the --data frames and write <out>/generator.pt.

    After an interruption, --resume continues from the last snapshot (checkpoints/latest.pt) with
    the run's own preset, batch, augmentation and seed; the result equals an uninterrupted run.
    Multi-process runs (--gpus N) are started with torchrun (gloo on CPU, nccl on CUDA); you can
    also launch `torchrun --nproc_per_node N -m svgen.cli.main train-image ...` yourself.
    """
    import dataclasses

    import torch

    from svgen.stage1_image_gan.train import (TrainConfig, check_batch, open_dataset, preset_for,
                                              read_init, train)
    from svgen.training.run import check_run_folder
    from svgen.utils.device import select_device
    from svgen.utils.io import ensure_parent_writable

    in_worker = "WORLD_SIZE" in os.environ and "RANK" in os.environ
    world = int(os.environ.get("WORLD_SIZE", "1")) if in_worker else gpus

    # Validate everything a user can get wrong before starting any process.
    if not in_worker and gpus > 1 and select_device(device).type == "cuda" \
            and gpus > torch.cuda.device_count():
        raise click.BadParameter(f"{gpus} processes need {gpus} GPUs, "
                                 f"{torch.cuda.device_count()} visible", param_hint="--gpus")
    dataset = open_dataset(data)
    train_preset = None
    if init is not None and resume:
        raise click.UsageError("--init starts a new run; --resume continues one (its start is in its checkpoint)")
    if preset is not None or not resume:
        if init is not None and preset is None:     # the run takes the generator's own preset
            from svgen.stage1_image_gan.checkpoints import checkpoint_preset, read_generator_checkpoint

            train_preset = checkpoint_preset(read_generator_checkpoint(init, mmap=True))
            if train_preset.G.img_resolution != dataset.resolution:
                raise SvgenError(f"the generator makes {train_preset.G.img_resolution} px images, the "
                                 f"dataset ({data}) has {dataset.resolution} px frames", init)
        else:
            train_preset = preset_for(preset or "auto", dataset, gpus=world)
            if init is not None:
                read_init(init, train_preset)
        if batch is not None:
            train_preset = dataclasses.replace(train_preset, batch=batch)
        check_batch(train_preset, world)
    elif batch is not None:
        raise click.UsageError("--batch cannot change on --resume")
    ensure_parent_writable(out / "config.json")
    latest = check_run_folder(out, resume)
    if resume:
        from svgen.stage1_image_gan.train import load_training_checkpoint

        load_training_checkpoint(latest)
    dataset.close()

    if world > 1 and not in_worker:
        argv = ["train-image", "--data", str(data), "--out", str(out), "--aug", aug, "--p", str(ada_p),
                "--gpus", str(gpus), "--workers", str(workers), "--seed", str(seed),
                "--device", device, "--metrics" if metrics else "--no-metrics"]
        for flag, value in (("--preset", preset), ("--kimg", kimg), ("--snap", snap_kimg),
                            ("--batch", batch), ("--init", init)):
            if value is not None:
                argv += [flag, str(value)]
        argv += ["--mirror"] * mirror + ["--resume"] * resume
        launch_torchrun(gpus, argv, out)
        return

    cfg = TrainConfig(data=str(data), out=str(out), preset=train_preset, kimg=kimg,
                      snap_kimg=snap_kimg, seed=seed, aug=aug, ada_p=ada_p, mirror=mirror,
                      workers=workers, device=device, swd_images=128 if metrics else 0,
                      resume=resume, init=str(init) if init is not None else None)
    gen_path = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(f"{gen_path}: trained generator written")
