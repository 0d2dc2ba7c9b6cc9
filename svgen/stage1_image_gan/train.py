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
from svgen.stage1_image_gan.checkpoints import make_generator_checkpoint
from svgen.stage1_image_gan.loss import StyleGAN2Loss
from svgen.stage1_image_gan.networks import Discriminator, Generator
from svgen.stage1_image_gan.presets import TrainPreset, get_preset, preset_from_dict
from svgen.utils.config import config_to_dict
from svgen.utils.device import select_device
from svgen.utils.errors import SvgenError
from svgen.utils.io import atomic_write, torch_save_atomic
from svgen.utils.progress import progress
from svgen.utils.rundir import RunDir, load_checkpoint
from svgen.utils.seed import get_rng_state, seed_everything, set_rng_state

AUG_MODES = ("ada", "noaug", "fixed")
TRAINING_KEYS = ("opt_G", "opt_D", "step", "cur_nimg", "train_config")


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved in ``config.json`` and every checkpoint)."""

    data: str                          # aligned.zip
    out: str                           # run directory
    preset: Optional[TrainPreset] = None  # None only with resume (taken from the checkpoint)
    kimg: Optional[float] = None       # training length in thousands of real images shown
                                       # (None: the preset's default, or the resumed run's)
    snap_kimg: Optional[float] = None  # checkpoint / samples / SWD interval (None: default)
    seed: int = 0
    aug: str = "ada"                   # "ada" (adaptive p), "noaug", "fixed" (constant p)
    ada_p: float = 0.0                 # initial p ("ada") or the constant p ("fixed")
    mirror: bool = False               # add x-flipped copies of the frames
    workers: int = 0                   # DataLoader worker processes
    device: str = "auto"
    log_every: int = 20                # iterations between log.jsonl records
    grid_size: int = 16                # images in the fixed-latent sample grid
    swd_images: int = 128              # real/fake images for the snapshot SWD (0: off)
    resume: bool = False


# -- processes -----------------------------------------------------------------------------------

@dataclass
class Dist:
    """This process's place in a (possibly single-process) data-parallel run."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return t
        buf = t.to(self.device).clone()
        torch.distributed.all_reduce(buf)
        return buf.to(t.device)

    def all_reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        return self.all_reduce_sum(t) / self.world_size if self.world_size > 1 else t

    def gather(self, obj: Any) -> list:
        if self.world_size == 1:
            return [obj]
        out: list = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out


def init_distributed(device_name: str) -> Dist:
    """Join the process group that ``torchrun`` set up (env WORLD_SIZE/RANK/LOCAL_RANK), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = select_device(device_name)
    if world > 1:
        if device.type == "cuda":
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            if local_rank >= torch.cuda.device_count():
                raise SvgenError(f"process {rank} needs GPU {local_rank} but only "
                                 f"{torch.cuda.device_count()} are visible")
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank=rank, world_size=world, device=device)


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
    ckpt = load_checkpoint(path, expect_format="svgen-generator")
    missing = [k for k in TRAINING_KEYS if k not in ckpt]
    if missing:
        raise SvgenError(f"generator checkpoint has no training state (missing {', '.join(missing)}); "
                         "cannot resume from it", path)
    return ckpt


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
    return dataclasses.replace(old, data=cfg.data, out=cfg.out,
                               kimg=old.kimg if cfg.kimg is None else cfg.kimg,
                               snap_kimg=old.snap_kimg if cfg.snap_kimg is None else cfg.snap_kimg,
                               workers=cfg.workers, device=cfg.device, log_every=cfg.log_every,
                               resume=True)


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


def make_optimizer(module: torch.nn.Module, lr: float, betas: tuple[float, float],
                   reg_interval: int) -> torch.optim.Adam:
    """Adam with the lazy-regularisation correction: lr * r and betas ** r, r = I / (I + 1)."""
    r = reg_interval / (reg_interval + 1)
    return torch.optim.Adam(module.parameters(), lr=lr * r, betas=(betas[0] ** r, betas[1] ** r),
                            eps=1e-8)


def reduce_gradients(module: torch.nn.Module, dist: Dist) -> None:
    """Average gradients over processes and replace NaN/inf (nan_to_num, as in SG2-ADA)."""
    params = list(module.parameters())
    if dist.world_size > 1:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.flatten() for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= dist.world_size
        torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad = g.view_as(p)
    else:
        for p in params:
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)


@torch.no_grad()
def update_ema(G_ema: Generator, G: Generator, beta: float) -> None:
    """Parameters: p_ema = lerp(p, p_ema, beta); buffers (w_avg, noise_const) are copied."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


def ema_beta(preset: TrainPreset, batch: int, cur_nimg: int) -> float:
    """Per-step EMA decay for a half-life of ``ema_kimg`` (shortened early by ``ema_rampup``)."""
    ema_nimg = preset.ema_kimg * 1000
    if preset.ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * preset.ema_rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


# -- the loop ------------------------------------------------------------------------------------

def train(cfg: TrainConfig) -> Path:
    """Train (or resume) and return the path of the exported ``<out>/generator.pt``.

    The loop seeds the global RNGs (that is what makes runs and resumes reproducible); the
    caller's RNG state is restored afterwards.
    """
    caller_rng = get_rng_state()
    try:
        return _train(cfg)
    finally:
        set_rng_state(caller_rng)


def _train(cfg: TrainConfig) -> Path:
    dist = init_distributed(cfg.device)
    device = dist.device
    if cfg.aug not in AUG_MODES:
        raise SvgenError(f"unknown --aug {cfg.aug!r} (use {', '.join(AUG_MODES)})")

    # Dataset, run folder, resume state.
    dataset = open_dataset(cfg.data)
    out = Path(cfg.out)
    run = RunDir(out) if dist.is_main else None
    latest = out / "checkpoints" / "latest.pt"
    ckpt = None
    if cfg.resume:
        if not latest.exists():
            raise SvgenError("--resume given but the run has no checkpoint", latest)
        ckpt = load_training_checkpoint(latest)
        dataset.check_resume(ckpt.get("meta", {}).get("dataset_fingerprint"))
    elif latest.exists():
        raise SvgenError("output folder already holds a training run; pass --resume to continue it "
                         "or choose another --out", out)
    cfg = resolve_config(cfg, ckpt)
    preset = cfg.preset
    if dataset.resolution != preset.G.img_resolution:
        raise SvgenError(f"dataset resolution {dataset.resolution} does not match the preset's "
                         f"{preset.G.img_resolution}", dataset.path)
    batch = preset.batch
    batch_gpu = check_batch(preset, dist.world_size)

    # Networks (identical initialisation on every process), optimizers, augmentation, loss.
    seed_everything(cfg.seed)
    G = Generator(preset.G).to(device).train().requires_grad_(False)
    D = Discriminator(preset.D).to(device).train().requires_grad_(False)
    G_ema = copy.deepcopy(G).eval()
    augment_pipe = None
    if cfg.aug != "noaug":
        augment_pipe = AugmentPipe(augment_config(preset.augpipe), p=cfg.ada_p).to(device)
    ada = AdaptiveP(augment_pipe, batch, preset.ada_target, 4, preset.ada_kimg) \
        if cfg.aug == "ada" else None
    opt_G = make_optimizer(G, preset.lr_G, preset.betas, preset.G_reg_interval)
    opt_D = make_optimizer(D, preset.lr_D, preset.betas, preset.D_reg_interval)
    loss = StyleGAN2Loss(G, D, augment_pipe, r1_gamma=preset.r1_gamma,
                         style_mixing_prob=preset.style_mixing_prob, pl_weight=preset.pl_weight,
                         pl_batch_shrink=preset.pl_batch_shrink, pl_decay=preset.pl_decay,
                         mean_across_ranks=dist.all_reduce_mean if dist.world_size > 1 else None)
    phases = [Phase("Gmain", G, opt_G, 1), Phase("Greg", G, opt_G, preset.G_reg_interval),
              Phase("Dmain", D, opt_D, 1), Phase("Dreg", D, opt_D, preset.D_reg_interval)]
    if preset.pl_weight == 0:
        phases = [ph for ph in phases if ph.name != "Greg"]
    if preset.r1_gamma == 0:
        phases = [ph for ph in phases if ph.name != "Dreg"]

    step, cur_nimg = 0, 0
    if ckpt is not None:
        G.load_state_dict(ckpt["G"])
        G_ema.load_state_dict(ckpt["G_ema"])
        D.load_state_dict(ckpt["D"])
        opt_G.load_state_dict(ckpt["opt_G"])
        opt_D.load_state_dict(ckpt["opt_D"])
        loss.pl_mean.copy_(ckpt["pl_mean"])
        if augment_pipe is not None:
            augment_pipe.p.copy_(torch.as_tensor(float(ckpt.get("augment_p", cfg.ada_p))))
        if ada is not None and "ada" in ckpt:
            ada.load_state_dict(ckpt["ada"])
        step, cur_nimg = int(ckpt["step"]), int(ckpt["cur_nimg"])
    # Training randomness differs per process; a resumed run continues its saved streams.
    seed_everything(cfg.seed * dist.world_size + dist.rank)
    rng = ckpt.get("rng") if ckpt is not None else None
    if rng is not None and len(rng) == dist.world_size:
        set_rng_state(rng[dist.rank])

    frames = Frames(dataset, mirror=cfg.mirror)
    reals = real_batches(frames, cfg, dist, start=step)
    swd_real = real_reference(dataset, cfg.swd_images) if dist.is_main and cfg.swd_images else None
    total_nimg = int(round(cfg.kimg * 1000))
    snap_nimg = max(int(round(cfg.snap_kimg * 1000)), 1)
    next_snap = (cur_nimg // snap_nimg + 1) * snap_nimg

    def snapshot() -> None:
        """Checkpoint + samples + SWD. Collective (RNG states of all processes are gathered)."""
        rng_all = dist.gather(_to_cpu(get_rng_state()))
        if not dist.is_main:
            return
        tag = snapshot_tag(cur_nimg)
        state = make_generator_checkpoint(preset, G, G_ema, D, meta=_meta())
        state.update(_to_cpu({
            "train_config": config_to_dict(cfg), "opt_G": opt_G.state_dict(),
            "opt_D": opt_D.state_dict(), "pl_mean": loss.pl_mean,
            "augment_p": float(augment_pipe.p) if augment_pipe is not None else 0.0,
            "ada": ada.state_dict() if ada is not None else None,
            "rng": rng_all, "step": step, "cur_nimg": cur_nimg, "kimg": cur_nimg / 1000,
            "world_size": dist.world_size}))
        run.save_checkpoint(state, snapshot_name=f"network-snapshot-{tag}.pt")
        fakes = generate_images(G_ema, cfg.grid_size, cfg.seed, device)
        save_image_grid(fakes, run.samples / f"fakes{tag}.png")
        if swd_real is not None:
            fake = generate_images(G_ema, len(swd_real), cfg.seed + 1, device)
            levels = swd_per_level(swd_real, fake, seed=cfg.seed)
            run.metrics.log(kimg=cur_nimg / 1000, step=step, swd=float(np.mean(levels)),
                            swd_levels=levels, num_images=len(swd_real))

    data_fingerprint = dataset.fingerprint()

    def _meta() -> dict:
        return {"kimg": cur_nimg / 1000, "step": step, "dataset": str(cfg.data),
                "dataset_resolution": dataset.resolution, "dataset_frames": len(dataset),
                "dataset_fingerprint": data_fingerprint,
                "augment": cfg.aug, "ada_p": float(augment_pipe.p) if augment_pipe is not None else 0.0,
                "world_size": dist.world_size, "seed": cfg.seed}

    if dist.is_main:
        run.save_config(cfg)
        run.log.log(event="resume" if ckpt is not None else "start", step=step,
                    kimg=cur_nimg / 1000, world_size=dist.world_size)
        if ckpt is None:
            save_image_grid(real_reference(dataset, cfg.grid_size), run.samples / "reals.png")
    if ckpt is None:
        snapshot()  # kimg 0: initial samples and SWD

    bar = progress(total=total_nimg, initial=min(cur_nimg, total_nimg), unit="img", unit_scale=True,
                   desc="train-image", disable=not dist.is_main)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    t_log, nimg_log = time.time(), cur_nimg
    while cur_nimg < total_nimg:
        real_img = next(reals)                                            # [batch_gpu, 3, R, R]
        all_gen_z = torch.randn(len(phases) * batch_gpu, preset.G.z_dim, device=device)
        for phase, gen_z in zip(phases, all_gen_z.split(batch_gpu)):
            if step % phase.interval != 0:
                continue
            phase.opt.zero_grad(set_to_none=True)
            phase.module.requires_grad_(True)
            stats = loss.accumulate_gradients(phase.name, real_img, None, gen_z, None,
                                              gain=phase.interval)
            phase.module.requires_grad_(False)
            reduce_gradients(phase.module, dist)
            phase.opt.step()
            real_logits = stats.pop("real_logits", None)
            if ada is not None and real_logits is not None:
                ada.accumulate(real_logits)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1

        # G EMA, then w_avg kept identical across processes.
        update_ema(G_ema, G, ema_beta(preset, batch, cur_nimg))
        if dist.world_size > 1:
            G.mapping.w_avg.copy_(dist.all_reduce_mean(G.mapping.w_avg))
            G_ema.mapping.w_avg.copy_(G.mapping.w_avg)
        cur_nimg += batch
        if ada is not None:
            ada.step(step, all_reduce=dist.all_reduce_sum)
        step += 1
        bar.update(batch)

        done = cur_nimg >= total_nimg
        if dist.is_main and (step % cfg.log_every == 0 or done):
            dt = time.time() - t_log
            rec = {k: sums[k] / counts[k] for k in sums}
            rec.update(kimg=cur_nimg / 1000, step=step, pl_mean=float(loss.pl_mean),
                       ada_p=float(augment_pipe.p) if augment_pipe is not None else 0.0,
                       r_t=ada.last_rt if ada is not None else None,
                       sec_per_kimg=dt / max((cur_nimg - nimg_log) / 1000, 1e-9))
            run.log.log(**rec)
            bar.set_postfix(kimg=f"{cur_nimg / 1000:.2f}", G=f"{rec.get('loss_G', float('nan')):.3f}",
                            D=f"{rec.get('loss_D', float('nan')):.3f}", p=f"{rec['ada_p']:.3f}")
            sums.clear()
            counts.clear()
            t_log, nimg_log = time.time(), cur_nimg
        if cur_nimg >= next_snap or done:
            snapshot()
            next_snap = (cur_nimg // snap_nimg + 1) * snap_nimg
    bar.close()

    # Export the final generator (and check that all processes hold the same weights).
    _check_consistency([G, D, G_ema], dist)
    gen_path = out / "generator.pt"
    if dist.is_main:
        torch_save_atomic(_to_cpu(make_generator_checkpoint(preset, G, G_ema, D, meta=_meta())),
                          gen_path)
    if dist.world_size > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return gen_path


def _check_consistency(modules: list[torch.nn.Module], dist: Dist) -> None:
    """All processes must end with identical parameters (a broken all-reduce would show here)."""
    if dist.world_size == 1:
        return
    with torch.no_grad():
        sums = torch.stack([p.double().sum() for m in modules for p in m.parameters()]).cpu()
    all_sums = dist.gather(sums)
    if any(not torch.equal(s, all_sums[0]) for s in all_sums[1:]):
        raise SvgenError("processes ended with different weights (distributed training is broken)")
