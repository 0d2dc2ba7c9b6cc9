"""StyleGAN2 training loop (with ADA), readable top to bottom.

One process per device; multi-device runs are launched by ``torchrun`` (``svgen train-image --gpus N``
does that for you) and average gradients across processes with ``torch.distributed`` (gloo on
CPU, nccl on CUDA). Each iteration runs the phases of the lazy-regularisation schedule:

    Gmain (every step)          non-saturating G loss
    Greg  (every 4th step)      path length penalty x 4
    Dmain (every step)          logistic D loss
    Dreg  (every 16th step)     R1 penalty x 16

then updates the G EMA (half-life ``ema_kimg`` with ramp-up) and, every 4 steps, ADA's p.
Every ``snap_kimg`` it writes ``checkpoints/latest.pt`` (atomically) plus a numbered snapshot with the
full training state, a fixed-latent sample grid in ``samples/`` and the SWD to the real frames in
``metrics.jsonl``. At the end it exports ``<out>/generator.pt``. A resumed run continues exactly:
weights, optimizers, EMA, ADA p, path-length mean, RNG states and data order are all restored.

The run folder, resume policy, process group, lazy-regularised Adam and the EMA come from
:mod:`svgen.training`; this module keeps the networks, the data stream and
:meth:`ImageGANTrainer.train_step`.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from PIL import Image

from svgen.metrics.swd import swd_per_level
from svgen.preprocessing.dataset import AlignedDataset
from svgen.stage1_image_gan.augment import AdaptiveP, AugmentPipe, augment_config
from svgen.stage1_image_gan.checkpoints import (build_networks, checkpoint_preset, make_generator_checkpoint,
                                                read_generator_checkpoint)
from svgen.stage1_image_gan.loss import StyleGAN2Loss
from svgen.stage1_image_gan.networks import Discriminator, Generator
from svgen.stage1_image_gan.presets import TrainPreset, get_preset, preset_from_dict
from svgen.training import (Dist, Run, check_consistency, from_invocation, half_life_beta, init_distributed,
                            lazy_regularised_adam, reduce_gradients, resumed_config, update_ema)
from svgen.training.state import load_resume_checkpoint, restore
from svgen.utils.config import config_to_dict
from svgen.utils.errors import SvgenError
from svgen.utils.io import atomic_write, file_sha256, torch_save_atomic
from svgen.utils.progress import progress
from svgen.utils.seed import get_rng_state, seed_everything, set_rng_state

AUG_MODES = ("ada", "noaug", "fixed")
TRAINING_KEYS = ("opt_G", "opt_D", "step", "cur_nimg", "train_config")


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved in ``config.json`` and every checkpoint)."""

    data: str = from_invocation()      # aligned.zip
    out: str = from_invocation()       # run directory
    preset: Optional[TrainPreset] = None  # None only with resume (taken from the checkpoint)
    kimg: Optional[float] = from_invocation(None, if_given=True)  # training length in thousands of
                                       # real images shown (None: the preset's default, or the resumed run's)
    snap_kimg: Optional[float] = from_invocation(None, if_given=True)  # checkpoint / samples / SWD
                                       # interval (None: default)
    seed: int = 0
    aug: str = "ada"                   # "ada" (adaptive p), "noaug", "fixed" (constant p)
    ada_p: float = 0.0                 # initial p ("ada") or the constant p ("fixed")
    mirror: bool = False               # add x-flipped copies of the frames
    workers: int = from_invocation(0)  # DataLoader worker processes
    device: str = from_invocation("auto")
    log_every: int = from_invocation(20)  # iterations between log.jsonl records
    grid_size: int = 16                # images in the fixed-latent sample grid
    swd_images: int = 128              # real/fake images for the snapshot SWD (0: off)
    resume: bool = from_invocation(False)
    init: Optional[str] = None         # generator file whose weights a new run starts from (transfer
                                       # learning: svgen .pt, NVIDIA .pkl or rosinality .pt); None: random


# -- data ----------------------------------------------------------------------------------------

def open_dataset(path: str | os.PathLike) -> AlignedDataset:
    """Open ``aligned.zip`` (SvgenError when missing, corrupt, or without frames)."""
    return AlignedDataset(path)


def preset_for(name: str, dataset: AlignedDataset, gpus: int = 1) -> TrainPreset:
    """The named preset at the dataset's resolution, or SvgenError if it cannot take it."""
    try:
        return get_preset(name, dataset.resolution, gpus=gpus)
    except ValueError as exc:
        raise SvgenError(f"dataset resolution {dataset.resolution} does not fit preset {name!r} "
                         f"({exc})", dataset.path) from None


class Frames(torch.utils.data.Dataset):
    """Frames as uint8 [3, R, R]; with ``mirror`` indices >= N give the x-flipped frame N - i."""

    def __init__(self, dataset: AlignedDataset, mirror: bool = False):
        self.dataset = dataset
        self.mirror = mirror

    def __len__(self) -> int:
        return len(self.dataset) * (2 if self.mirror else 1)

    def __getitem__(self, i: int) -> torch.Tensor:
        n = len(self.dataset)
        img = self.dataset[i % n]                                   # [R, R, 3] uint8
        if i >= n:
            img = img[:, ::-1]
        return torch.from_numpy(np.array(img)).permute(2, 0, 1)  # a writable copy


class GlobalBatches(torch.utils.data.Sampler):
    """Deterministic, resumable batch order: an endless stream of per-epoch permutations
    (epoch e shuffled with seed ``seed + e``); global batch b holds stream positions
    [b*B, (b+1)*B) and process ``rank`` takes its slice of it. Starting at batch ``start`` gives
    exactly the batches an uninterrupted run would see from there on, for any number of processes.
    """

    def __init__(self, num_items: int, batch: int, rank: int, world_size: int, seed: int,
                 start: int = 0):
        self.n, self.batch, self.seed, self.start = num_items, batch, seed, start
        self.per_rank = batch // world_size
        self.rank = rank

    def _perm(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))

    def __iter__(self) -> Iterator[list[int]]:
        b = self.start
        epoch, perm = -1, None
        while True:
            out = []
            lo = b * self.batch + self.rank * self.per_rank
            for pos in range(lo, lo + self.per_rank):
                if pos // self.n != epoch:
                    epoch = pos // self.n
                    perm = self._perm(epoch)
                out.append(int(perm[pos % self.n]))
            yield out
            b += 1


def real_batches(frames: Frames, cfg: TrainConfig, dist: Dist, start: int) -> Iterator[torch.Tensor]:
    """Endless per-process batches of real frames as float [-1, 1] on the device."""
    sampler = GlobalBatches(len(frames), cfg.preset.batch, dist.rank, dist.world_size, cfg.seed,
                            start)
    loader = torch.utils.data.DataLoader(
        frames, batch_sampler=sampler, num_workers=cfg.workers,
        pin_memory=dist.device.type == "cuda",
        generator=torch.Generator().manual_seed(cfg.seed))  # never touches the global RNG
    for batch in loader:
        yield batch.to(dist.device, non_blocking=True).to(torch.float32) / 127.5 - 1


# -- images and metrics --------------------------------------------------------------------------

def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 (same shape)."""
    return (img.detach().float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def save_image_grid(images: torch.Tensor, path: Path) -> None:
    """uint8 [N, 3, R, R] -> one PNG grid (ceil(sqrt(N)) columns), written atomically."""
    n, c, h, w = images.shape
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    grid = torch.zeros(rows * h, cols * w, c, dtype=torch.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        grid[r * h:(r + 1) * h, k * w:(k + 1) * w] = images[i].permute(1, 2, 0).cpu()
    with atomic_write(path) as fh:
        Image.fromarray(grid.numpy()).save(fh, format="PNG")


@torch.no_grad()
def generate_images(G: Generator, num: int, seed: int, device: torch.device,
                    batch: int = 32) -> torch.Tensor:
    """``num`` uint8 images [num, 3, R, R] from fixed latents (private RNG, const noise)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(num, G.z_dim, generator=gen)
    out = []
    for zb in z.split(batch):
        ws = G.mapping(zb.to(device), None)
        out.append(to_uint8(G.synthesis(ws, noise_mode="const")).cpu())
    return torch.cat(out)


def real_reference(frames: AlignedDataset, num: int) -> torch.Tensor:
    """``num`` frames spread evenly over the dataset, uint8 [num, 3, R, R] (the SWD reference)."""
    idx = np.linspace(0, len(frames) - 1, num=min(num, len(frames))).round().astype(int)
    return torch.stack([torch.from_numpy(frames[int(i)].copy()).permute(2, 0, 1) for i in idx])


def snapshot_tag(nimg: int) -> str:
    """``000012`` at whole kimg, ``000012.500`` in between (fractional --snap never collide)."""
    return f"{nimg // 1000:06d}" if nimg % 1000 == 0 else f"{nimg / 1000:010.3f}"


# -- state ---------------------------------------------------------------------------------------

def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def load_training_checkpoint(path: Path) -> dict:
    """``latest.pt`` for --resume: an svgen generator checkpoint with training state."""
    return load_resume_checkpoint(path, "svgen-generator", required=TRAINING_KEYS, what="generator")


def default_kimg(preset: TrainPreset) -> tuple[float, float]:
    """(kimg, snap_kimg) when not given: CPU-sized for ``tiny``, SG2-ADA's 25000/200 otherwise."""
    return (200.0, 10.0) if preset.name == "tiny" else (25000.0, 200.0)


def resolve_config(cfg: TrainConfig, ckpt: Optional[dict]) -> TrainConfig:
    """Fill in defaults; for --resume take the saved run's settings, with this invocation's
    length (if given), logging and device."""
    if ckpt is None:
        if cfg.preset is None:
            raise SvgenError("no preset given for a new training run", cfg.out)
        kimg, snap = default_kimg(cfg.preset)
        return dataclasses.replace(cfg, kimg=kimg if cfg.kimg is None else cfg.kimg,
                                   snap_kimg=snap if cfg.snap_kimg is None else cfg.snap_kimg)
    saved = dict(ckpt["train_config"])
    preset = preset_from_dict(saved.pop("preset"))
    if cfg.preset is not None and (cfg.preset.name != preset.name
                                   or cfg.preset.G.img_resolution != preset.G.img_resolution
                                   or cfg.preset.batch != preset.batch):
        raise SvgenError(f"the run was started with preset {preset.name!r} at "
                         f"{preset.G.img_resolution} px, batch {preset.batch}; resume it with the "
                         "same settings", Path(cfg.out) / "checkpoints" / "latest.pt")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    old = TrainConfig(**{k: v for k, v in saved.items() if k in known}, preset=preset)
    return resumed_config(old, dataclasses.replace(cfg, resume=True))


def read_init(path: str | os.PathLike, preset: TrainPreset) -> dict:
    """The checkpoint dict of a generator a new run starts from (``--init``), or SvgenError naming it
    when its networks are not the ones ``preset`` builds."""
    init = read_generator_checkpoint(path, mmap=True)
    theirs = checkpoint_preset(init)
    if any(dataclasses.asdict(getattr(theirs, net)) != dataclasses.asdict(getattr(preset, net))
           for net in ("G", "D")):
        raise SvgenError(f"its networks ({theirs.name!r} preset at {theirs.G.img_resolution} px) are not "
                         f"the {preset.name!r} preset's at {preset.G.img_resolution} px; leave --preset out "
                         "to train with its own", path)
    return init


def check_batch(preset: TrainPreset, world_size: int) -> int:
    """Per-process batch; it must split evenly and keep minibatch-std groups whole."""
    if preset.batch % world_size:
        raise SvgenError(f"batch {preset.batch} is not divisible by {world_size} processes")
    batch_gpu = preset.batch // world_size
    group = min(preset.D.mbstd_group_size, batch_gpu)
    if group > 0 and batch_gpu % group:
        raise SvgenError(f"per-process batch {batch_gpu} is not a multiple of the minibatch-std "
                         f"group {group}")
    return batch_gpu


@dataclass
class Phase:
    name: str
    module: torch.nn.Module
    opt: torch.optim.Optimizer
    interval: int


# -- the loop ------------------------------------------------------------------------------------

def train(cfg: TrainConfig) -> Path:
    """Train (or resume) and return the path of the exported ``<out>/generator.pt``.

    The loop seeds the global RNGs (that is what makes runs and resumes reproducible); the
    caller's RNG state is restored afterwards.
    """
    caller_rng = get_rng_state()
    try:
        return ImageGANTrainer(cfg).train()
    finally:
        set_rng_state(caller_rng)


class ImageGANTrainer:
    """One process's share of a stage-1 run: networks, optimizers, ADA, loss and data stream."""

    def __init__(self, cfg: TrainConfig):
        self.dist = dist = init_distributed(cfg.device)
        device = dist.device
        if cfg.aug not in AUG_MODES:
            raise SvgenError(f"unknown --aug {cfg.aug!r} (use {', '.join(AUG_MODES)})")

        # Dataset, run folder, resume state.
        self.dataset = dataset = open_dataset(cfg.data)
        self.run = Run(cfg.out, cfg.resume, main=dist.is_main)
        ckpt = None
        if cfg.resume:
            ckpt = load_training_checkpoint(self.run.latest)
            dataset.check_resume(ckpt.get("meta", {}).get("dataset_fingerprint"))
        self.cfg = cfg = resolve_config(cfg, ckpt)
        self.preset = preset = cfg.preset
        if dataset.resolution != preset.G.img_resolution:
            raise SvgenError(f"dataset resolution {dataset.resolution} does not match the preset's "
                             f"{preset.G.img_resolution}", dataset.path)
        self.batch_gpu = check_batch(preset, dist.world_size)

        # Networks (identical initialisation on every process), optimizers, augmentation, loss.
        seed_everything(cfg.seed)
        self.G = Generator(preset.G).to(device).train().requires_grad_(False)
        self.D = Discriminator(preset.D).to(device).train().requires_grad_(False)
        self.G_ema = copy.deepcopy(self.G).eval()
        self.augment_pipe = None
        if cfg.aug != "noaug":
            self.augment_pipe = AugmentPipe(augment_config(preset.augpipe), p=cfg.ada_p).to(device)
        self.ada = AdaptiveP(self.augment_pipe, preset.batch, preset.ada_target, 4, preset.ada_kimg) \
            if cfg.aug == "ada" else None
        self.opt_G = lazy_regularised_adam(self.G.parameters(), preset.lr_G, preset.betas, preset.G_reg_interval)
        self.opt_D = lazy_regularised_adam(self.D.parameters(), preset.lr_D, preset.betas, preset.D_reg_interval)
        self.loss = StyleGAN2Loss(self.G, self.D, self.augment_pipe, r1_gamma=preset.r1_gamma,
                                  style_mixing_prob=preset.style_mixing_prob, pl_weight=preset.pl_weight,
                                  pl_batch_shrink=preset.pl_batch_shrink, pl_decay=preset.pl_decay,
                                  mean_across_ranks=dist.all_reduce_mean if dist.world_size > 1 else None)
        phases = [Phase("Gmain", self.G, self.opt_G, 1), Phase("Greg", self.G, self.opt_G, preset.G_reg_interval),
                  Phase("Dmain", self.D, self.opt_D, 1), Phase("Dreg", self.D, self.opt_D, preset.D_reg_interval)]
        self.phases = [ph for ph in phases if not (ph.name == "Greg" and preset.pl_weight == 0)
                       and not (ph.name == "Dreg" and preset.r1_gamma == 0)]

        self.step, self.cur_nimg = 0, 0
        self.init_sha256 = ""
        if ckpt is not None:
            self._load_state(ckpt)
            self.init_sha256 = str(ckpt.get("meta", {}).get("init_sha256", ""))  # a resumed --init run
        elif cfg.init:
            self._load_init(Path(cfg.init))
        # Training randomness differs per process; a resumed run continues its saved streams.
        seed_everything(cfg.seed * dist.world_size + dist.rank)
        rng = ckpt.get("rng") if ckpt is not None else None
        if rng is not None and len(rng) == dist.world_size:
            set_rng_state(rng[dist.rank])

        self.reals = real_batches(Frames(dataset, mirror=cfg.mirror), cfg, dist, start=self.step)
        self.swd_real = real_reference(dataset, cfg.swd_images) if dist.is_main and cfg.swd_images else None
        self.data_fingerprint = dataset.fingerprint()
        self.resumed = ckpt is not None

    def _load_state(self, ckpt: dict) -> None:
        restore(ckpt, {"G": self.G, "G_ema": self.G_ema, "D": self.D, "opt_G": self.opt_G, "opt_D": self.opt_D,
                       "ada": self.ada}, optional=("ada",))
        self.loss.pl_mean.copy_(ckpt["pl_mean"])
        if self.augment_pipe is not None:
            self.augment_pipe.p.copy_(torch.as_tensor(float(ckpt.get("augment_p", self.cfg.ada_p))))
        self.step, self.cur_nimg = int(ckpt["step"]), int(ckpt["cur_nimg"])

    def _load_init(self, path: Path) -> None:
        """Start from another generator's weights (G, G_ema, and D when the file has one): the
        transfer-learning start of StyleGAN2-ADA's ``--resume=<pkl>``, with a fresh count of images,
        fresh optimisers and ADA's p from zero."""
        init = read_init(path, self.preset)
        G, G_ema, D = build_networks(init, path)
        self.G.load_state_dict(G.state_dict())
        self.G_ema.load_state_dict(G_ema.state_dict())
        if D is not None:
            self.D.load_state_dict(D.state_dict())
        self.init_sha256 = file_sha256(path)

    # -- one iteration -----------------------------------------------------------------------------
    def train_step(self, real_img: torch.Tensor) -> list[dict]:
        """The phases due at this step on real images [batch_gpu, 3, R, R], then the G EMA and ADA's p.
        Returns the statistics of each phase that ran."""
        dist, preset, batch_gpu = self.dist, self.preset, self.batch_gpu
        out = []
        all_gen_z = torch.randn(len(self.phases) * batch_gpu, preset.G.z_dim, device=dist.device)
        for phase, gen_z in zip(self.phases, all_gen_z.split(batch_gpu)):
            if self.step % phase.interval != 0:
                continue
            phase.opt.zero_grad(set_to_none=True)
            phase.module.requires_grad_(True)
            stats = self.loss.accumulate_gradients(phase.name, real_img, None, gen_z, None, gain=phase.interval)
            phase.module.requires_grad_(False)
            reduce_gradients(phase.module.parameters(), dist)
            phase.opt.step()
            real_logits = stats.pop("real_logits", None)
            if self.ada is not None and real_logits is not None:
                self.ada.accumulate(real_logits)
            out.append(stats)

        # G EMA, then w_avg kept identical across processes.
        update_ema(self.G_ema, self.G, half_life_beta(preset.batch, self.cur_nimg, preset.ema_kimg, preset.ema_rampup))
        if dist.world_size > 1:
            self.G.mapping.w_avg.copy_(dist.all_reduce_mean(self.G.mapping.w_avg))
            self.G_ema.mapping.w_avg.copy_(self.G.mapping.w_avg)
        self.cur_nimg += preset.batch
        if self.ada is not None:
            self.ada.step(self.step, all_reduce=dist.all_reduce_sum)
        self.step += 1
        return out

    # -- snapshots -------------------------------------------------------------------------------
    def meta(self) -> dict:
        cfg, dataset = self.cfg, self.dataset
        return {"kimg": self.cur_nimg / 1000, "step": self.step, "dataset": str(cfg.data),
                "dataset_resolution": dataset.resolution, "dataset_frames": len(dataset),
                "dataset_fingerprint": self.data_fingerprint, "augment": cfg.aug, "ada_p": self.ada_p(),
                "world_size": self.dist.world_size, "seed": cfg.seed,
                **({"init": str(cfg.init), "init_sha256": self.init_sha256} if cfg.init else {})}

    def ada_p(self) -> float:
        return float(self.augment_pipe.p) if self.augment_pipe is not None else 0.0

    def snapshot(self) -> None:
        """Checkpoint + samples + SWD. Collective (RNG states of all processes are gathered)."""
        rng_all = self.dist.gather(_to_cpu(get_rng_state()))
        if not self.dist.is_main:
            return
        cfg, cur_nimg = self.cfg, self.cur_nimg
        tag = snapshot_tag(cur_nimg)
        state = make_generator_checkpoint(self.preset, self.G, self.G_ema, self.D, meta=self.meta())
        state.update(_to_cpu({
            "train_config": config_to_dict(cfg), "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(), "pl_mean": self.loss.pl_mean, "augment_p": self.ada_p(),
            "ada": self.ada.state_dict() if self.ada is not None else None,
            "rng": rng_all, "step": self.step, "cur_nimg": cur_nimg, "kimg": cur_nimg / 1000,
            "world_size": self.dist.world_size}))
        self.run.save_checkpoint(state, snapshot_name=f"network-snapshot-{tag}.pt")
        device = self.dist.device
        save_image_grid(generate_images(self.G_ema, cfg.grid_size, cfg.seed, device),
                        self.run.samples / f"fakes{tag}.png")
        if self.swd_real is not None:
            fake = generate_images(self.G_ema, len(self.swd_real), cfg.seed + 1, device)
            levels = swd_per_level(self.swd_real, fake, seed=cfg.seed)
            self.run.log_metrics(kimg=cur_nimg / 1000, step=self.step, swd=float(np.mean(levels)),
                                 swd_levels=levels, num_images=len(self.swd_real))

    # -- the run ---------------------------------------------------------------------------------
    def train(self) -> Path:
        """Run to ``cfg.kimg`` (snapshots every ``snap_kimg``) and export ``<out>/generator.pt``."""
        cfg, dist, run = self.cfg, self.dist, self.run
        run.save_config(cfg)
        run.log_step(event="resume" if self.resumed else "start", step=self.step, kimg=self.cur_nimg / 1000,
                     world_size=dist.world_size)
        if dist.is_main and not self.resumed:
            save_image_grid(real_reference(self.dataset, cfg.grid_size), run.samples / "reals.png")
        if not self.resumed:
            self.snapshot()  # kimg 0: initial samples and SWD

        total_nimg = int(round(cfg.kimg * 1000))
        snap_nimg = max(int(round(cfg.snap_kimg * 1000)), 1)
        next_snap = (self.cur_nimg // snap_nimg + 1) * snap_nimg
        bar = progress(total=total_nimg, initial=min(self.cur_nimg, total_nimg), unit="img", unit_scale=True,
                       desc="train-image", disable=not dist.is_main)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        t_log, nimg_log = time.time(), self.cur_nimg
        while self.cur_nimg < total_nimg:
            for stats in self.train_step(next(self.reals)):
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                    counts[k] = counts.get(k, 0) + 1
            bar.update(self.preset.batch)
            done = self.cur_nimg >= total_nimg
            if dist.is_main and (self.step % cfg.log_every == 0 or done):
                dt = time.time() - t_log
                rec = {k: sums[k] / counts[k] for k in sums}
                rec.update(kimg=self.cur_nimg / 1000, step=self.step, pl_mean=float(self.loss.pl_mean),
                           ada_p=self.ada_p(), r_t=self.ada.last_rt if self.ada is not None else None,
                           sec_per_kimg=dt / max((self.cur_nimg - nimg_log) / 1000, 1e-9))
                run.log_step(**rec)
                bar.set_postfix(kimg=f"{self.cur_nimg / 1000:.2f}", G=f"{rec.get('loss_G', float('nan')):.3f}",
                                D=f"{rec.get('loss_D', float('nan')):.3f}", p=f"{rec['ada_p']:.3f}")
                sums.clear()
                counts.clear()
                t_log, nimg_log = time.time(), self.cur_nimg
            if self.cur_nimg >= next_snap or done:
                self.snapshot()
                next_snap = (self.cur_nimg // snap_nimg + 1) * snap_nimg
        bar.close()

        # Export the final generator (and check that all processes hold the same weights).
        check_consistency([self.G, self.D, self.G_ema], dist)
        gen_path = Path(cfg.out) / "generator.pt"
        if dist.is_main:
            torch_save_atomic(_to_cpu(make_generator_checkpoint(self.preset, self.G, self.G_ema, self.D,
                                                                meta=self.meta())), gen_path)
        run.close()
        dist.close()
        return gen_path
