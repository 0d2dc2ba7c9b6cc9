"""Training the inversion encoder against a frozen generator (``svgen train-encoder``).

Each step mixes two kinds of images (pSp-style training, plus the latent supervision that only a
known generator allows):

- generated: z -> w (style-mixed for W+) -> x = G(w); the true latent is known, so the loss is the
  image loss plus ``latent`` * ||E(x) - w||^2;
- real aligned frames (random horizontal flips): the image loss only.

Image loss = pixel L2 + MS-SSIM + the identity loss (dlib's face-recognition ResNet, shipped; ArcFace
when its weights are given) (+ LPIPS when its weights are given),
computed between x and G(E(x)) with the generator frozen (``noise_mode="const"``).

W+ encoders are trained the e4e way (Tov et al. 2021) so their codes stay where the generator (and a
motion model trained on them) works: the base code w0 trains alone first, then the per-layer deltas
are unlocked one by one (after ``progressive_start_kimg``, one every ``progressive_every_kimg``: absolute
image counts, so a resumed run follows the same schedule as an uninterrupted one), their
L2 norms are penalised (``delta_reg``), and a latent discriminator (an MLP telling mapping-network
codes from the encoder's, non-saturating loss with lazy R1) pulls every entry toward W (``w_disc``). Adam, an EMA copy
of the encoder (half-life in kimg with a ramp-up, as stage 1), ``checkpoints/latest.pt`` replaced
atomically, numbered snapshots, ``log.jsonl``, sample grids and ``--resume`` that continues the same
random stream (the run folder, resume policy, EMA and outer loop of :mod:`svgen.training`). The result is
``<out>/encoder.pt``.

Under ``torchrun`` (``svgen train-encoder --gpus N``) each process takes 1/N of the generated and of the
real images of every global batch: all processes draw the whole batch's latents, frame indices and flips
from the shared sampling stream and keep their part, the encoder's BatchNorm layers normalise over the
global batch (:mod:`svgen.training.sync_bn`) and the encoder's and latent discriminator's gradients are
averaged, so N processes follow one process with the same ``--batch``. The frozen generator and the
loss networks are not distributed; only process 0 writes.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch
from torch import nn

from svgen.inversion.backbone import arcface_to_backbone_state
from svgen.inversion.encoders import (EncoderConfig, build_encoder, encoder_checkpoint,
                                      encoder_config_from_dict, make_encoder_config)
from svgen.inversion.latent_discriminator import (LatentDiscriminator, discriminator_step,
                                                  encoder_adversarial_loss)
from svgen.inversion.identity import LossOffWarning
from svgen.inversion.losses import LPIPS_EXPECTED, ReconstructionLoss, _load_weight_file, latent_l2
from svgen.training import (Dist, Run, check_consistency, from_invocation, half_life_beta, init_distributed_on,
                            reduce_gradients, resumed_config, saved_config, update_ema)
from svgen.training.loop import fit
from svgen.training.state import restore
from svgen.training.sync_bn import convert_batchnorm
from svgen.utils.config import config_to_dict
from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.io import check_generator_sha256, file_sha256, torch_save_atomic
from svgen.utils.seed import get_rng_state, seed_everything, set_rng_state

# kimg (thousands of training images) by encoder preset when neither --kimg nor --steps is given
DEFAULT_KIMG = {"tiny": 16.0, "ir_se50": 2400.0}
DEFAULT_LR = {"tiny": 2e-3, "ir_se50": 1e-4}
DEFAULT_BATCH = {"tiny": 16, "ir_se50": 8}


@dataclass
class TrainEncoderConfig:
    """Hyper-parameters of an encoder training run (saved in config.json and every checkpoint)."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    batch: int = 16                # images per step, generated + real
    real_fraction: float = 0.5     # share of real frames in a batch (0 when the data is absent)
    total_steps: int = from_invocation(1000, if_given=True)   # a resumed run takes --steps / --kimg
    lr: float = 1e-3
    betas: tuple = (0.9, 0.999)
    l2: float = 1.0                # pixel L2 weight
    msssim: float = 0.5            # (1 - MS-SSIM) weight
    latent: float = 1.0            # latent L2 on generated pairs
    lpips: float = 0.8             # used only with --lpips-weights
    id: float = 0.1                # identity loss weight (dlib's ResNet, or ArcFace with --id-weights)
    style_mixing: float = 0.5      # probability of a mixed W+ target (W+ encoders only)
    delta_reg: float = 2e-4        # e4e: weight of sum_i ||delta_i||_2 (W+ e4e encoders)
    progressive_start_kimg: float = 0.4   # e4e: images (thousands) trained with w0 alone (deltas locked)
    progressive_every_kimg: float = 0.1   # e4e: then one more delta unlocked every this many (thousands)
    w_disc: float = 0.1            # e4e: weight of the latent discriminator's adversarial term (0: off)
    w_disc_lr: float = 2e-4        # its Adam learning rate
    w_disc_r1: float = 10.0        # its R1 gamma, applied lazily every 16 steps
    xflip: bool = True             # random horizontal flips of real frames
    ema_kimg: float = 1.0          # EMA half-life in thousands of images
    ema_rampup: float = 0.05       # half-life <= rampup * images seen
    log_every: int = 20
    snapshot_every: int = from_invocation(200, if_given=True)   # steps between latest.pt + a sample grid
    keep_every: int = 1000         # steps between numbered snapshots (encoder-NNNNNNN.pt)
    seed: int = 0


def saved_train_config(data: dict) -> TrainEncoderConfig:
    """A saved :class:`TrainEncoderConfig`; configs saved before the cadences were renamed
    (``checkpoint_every`` for latest.pt, ``snapshot_every`` for numbered files) are mapped onto
    ``snapshot_every`` / ``keep_every``, the names (and step units) every trainer uses."""
    data = dict(data)
    if "checkpoint_every" in data:
        data["keep_every"] = data.pop("snapshot_every", TrainEncoderConfig.keep_every)
        data["snapshot_every"] = data.pop("checkpoint_every")
    cfg = saved_config(TrainEncoderConfig, data)
    cfg.betas = tuple(cfg.betas)
    return cfg


def _real_targets(frames: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> float [N, 3, R, R] in [-1, 1] at the generator's resolution."""
    x = frames.float() / 127.5 - 1.0
    if x.shape[-1] != resolution:
        x = torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bilinear",
                                            align_corners=False, antialias=True)
    return x


class EncoderTrainer:
    """One training run: networks, optimiser, EMA, data sampling and the step function."""

    def __init__(self, G: nn.Module, cfg: TrainEncoderConfig, dataset: Any, device: torch.device,
                 loss: ReconstructionLoss, w_avg: torch.Tensor, dist: Optional[Dist] = None):
        self.G, self.cfg, self.dataset, self.device, self.loss = G, cfg, dataset, device, loss
        self.dist = dist if dist is not None else Dist(rank=0, world_size=1, device=device)
        self.E = convert_batchnorm(build_encoder(cfg.encoder, w_avg).to(device).train(), self.dist)
        self.E_ema = copy.deepcopy(self.E).eval().requires_grad_(False)
        self.opt = torch.optim.Adam(self.E.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
        self.gen = torch.Generator().manual_seed(cfg.seed)  # data + latent sampling stream
        self.step = 0
        self.e4e = getattr(self.E, "e4e", False)
        self.D_w = self.opt_D_w = None
        if cfg.w_disc > 0 and cfg.encoder.space == "w+":
            self.D_w = LatentDiscriminator(G.w_dim).to(device)
            with torch.no_grad():
                z = torch.randn(4096, G.z_dim, generator=torch.Generator().manual_seed(cfg.seed + 1))
                self.D_w.set_statistics(G.mapping(z.to(device), None)[:, 0].float())
            self.opt_D_w = torch.optim.Adam(self.D_w.parameters(), lr=cfg.w_disc_lr, betas=(0.9, 0.999))
        self.set_stage()

    def progressive_stage(self, step: int) -> int:
        """e4e: how many deltas are unlocked at ``step`` (0 = w0 alone, num_ws - 1 = all)."""
        n = self.cfg.encoder.num_ws - 1
        kimg = step * self.cfg.batch / 1000
        if n <= 0 or kimg < self.cfg.progressive_start_kimg:
            return 0 if n > 0 else n
        every = max(self.cfg.progressive_every_kimg, 1e-9)
        return min(n, 1 + int((kimg - self.cfg.progressive_start_kimg) / every))

    def set_stage(self) -> None:
        if self.e4e:
            stage = self.progressive_stage(self.step)
            self.E.stage.fill_(stage)
            self.E_ema.stage.fill_(stage)

    # -- state -------------------------------------------------------------------------------
    def state(self) -> dict:
        st = {"optimizer": self.opt.state_dict(), "rng": get_rng_state(),
              "sampler_rng": self.gen.get_state(), "step": self.step,
              "kimg": self.step * self.cfg.batch / 1000}
        if self.D_w is not None:
            st["D_w"] = self.D_w.state_dict()
            st["opt_D_w"] = self.opt_D_w.state_dict()
        return st

    def load_state(self, ckpt: dict) -> None:
        ema = ckpt.get("E_ema", ckpt["E"])     # checkpoints without an EMA copy
        restore(dict(ckpt, E_ema=ema), {"E": self.E, "E_ema": self.E_ema, "optimizer": self.opt, "D_w": self.D_w,
                                        "opt_D_w": self.opt_D_w}, optional=("D_w", "opt_D_w"))
        set_rng_state(ckpt["rng"])
        self.gen.set_state(ckpt["sampler_rng"])
        self.step = int(ckpt["step"])
        self.set_stage()

    # -- batches -----------------------------------------------------------------------------
    def sample_generated(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's part of ``n`` generated images with their true latents ([n / processes, 3, R, R],
        [n / processes, num_ws, w_dim]); the randoms of all ``n`` are drawn (see the module doc)."""
        G, cfg, share = self.G, self.cfg, self.dist.share
        z = torch.randn(n, G.z_dim, generator=self.gen)
        mixing = cfg.encoder.space == "w+" and cfg.style_mixing > 0 and G.num_ws > 1
        if mixing:
            mix = share(torch.rand(n, generator=self.gen) < cfg.style_mixing)
            cut = share(torch.randint(1, G.num_ws, (n,), generator=self.gen))
            z2 = share(torch.randn(n, G.z_dim, generator=self.gen)).to(self.device)
        with torch.no_grad():
            ws = G.mapping(share(z).to(self.device), None)
            if mixing:
                ws2 = G.mapping(z2, None)
                layer = torch.arange(G.num_ws).view(1, -1)
                use2 = (mix.view(-1, 1) & (layer >= cut.view(-1, 1))).to(self.device)
                ws = torch.where(use2.unsqueeze(-1), ws2, ws)
            img = G.synthesis(ws, noise_mode="const")
        return img.clamp(-1, 1), ws

    def sample_real(self, n: int) -> torch.Tensor:
        """This process's part of ``n`` real frames (randomly flipped) [n / processes, 3, R, R]."""
        idx = torch.randint(len(self.dataset), (n,), generator=self.gen)
        flips = torch.rand(n, generator=self.gen) < 0.5 if self.cfg.xflip else torch.zeros(n, dtype=torch.bool)
        frames = []
        idx, flips = self.dist.share(idx).tolist(), self.dist.share(flips).tolist()
        for i, f in zip(idx, flips):
            a = self.dataset[i]
            frames.append(a[:, ::-1] if f else a)
        x = torch.from_numpy(np.ascontiguousarray(np.stack(frames))).permute(0, 3, 1, 2)
        return _real_targets(x.to(self.device), self.G.img_resolution)

    # -- step --------------------------------------------------------------------------------
    def reduce(self, params: Iterable[nn.Parameter]) -> None:
        """Average the gradients over processes (a no-op for one process)."""
        if self.dist.world_size > 1:
            reduce_gradients(params, self.dist)

    def train_step(self) -> dict:
        cfg, G = self.cfg, self.G
        n_real = int(round(cfg.batch * cfg.real_fraction)) if self.dataset is not None else 0
        n_gen = cfg.batch - n_real
        parts = []
        x_gen = ws_true = None
        if n_gen:
            x_gen, ws_true = self.sample_generated(n_gen)
            parts.append(x_gen)
        if n_real:
            parts.append(self.sample_real(n_real))
        x = torch.cat(parts, 0)                               # [B, 3, R, R]
        self.set_stage()
        if self.e4e:
            ws_hat, deltas = self.E.encode_with_deltas(x)     # [B, num_ws, w_dim], [B, num_ws-1, w_dim]
        else:
            ws_hat, deltas = self.E(x), None
        x_hat = G.synthesis(ws_hat, noise_mode="const")       # [B, 3, R, R]
        img_loss, logs = self.loss(x_hat, x)
        total = img_loss.mean()
        if n_gen and cfg.latent > 0:
            lat = latent_l2(ws_hat[:len(ws_true)], ws_true).mean()
            total = total + cfg.latent * lat
            logs["latent"] = float(lat.detach())
        active = int(self.E.stage) + 1 if self.e4e else cfg.encoder.num_ws
        if deltas is not None and cfg.delta_reg > 0 and active > 1:
            d_reg = deltas[:, :active - 1].norm(dim=2).mean(0).sum()   # e4e: sum_i mean_batch ||delta_i||
            total = total + cfg.delta_reg * d_reg
            logs["delta"] = float(d_reg.detach())
        if self.D_w is not None:
            adv = encoder_adversarial_loss(self.D_w, ws_hat, active)
            total = total + cfg.w_disc * adv
            logs["wdisc_e"] = float(adv.detach())
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        self.reduce(self.E.parameters())
        self.opt.step()
        if self.D_w is not None:
            with torch.no_grad():
                z = self.dist.share(torch.randn(cfg.batch, G.z_dim, generator=self.gen)).to(self.device)
                w_real = G.mapping(z, None)[:, 0]
            logs.update(discriminator_step(self.D_w, self.opt_D_w, w_real,
                                           ws_hat[:, :active].reshape(-1, ws_hat.shape[-1]),
                                           cfg.w_disc_r1, self.step % 16 == 0, 16, reduce=self.reduce))
        self.step += 1
        update_ema(self.E_ema, self.E, half_life_beta(cfg.batch, self.step * cfg.batch, cfg.ema_kimg,
                                                      cfg.ema_rampup if cfg.ema_rampup > 0 else None))
        logs["loss"] = float(total.detach())
        return logs

    @torch.no_grad()
    def sample_grid(self, path: Path, real: Optional[torch.Tensor]) -> None:
        """PNG grid: top row inputs (fixed real frames, else fixed generated images), bottom row
        the EMA encoder's reconstructions. Uses its own RNG, so resuming is unaffected."""
        from PIL import Image

        n = 8
        if real is not None:
            x = real[:n]
        else:
            z = torch.randn(n, self.G.z_dim, generator=torch.Generator().manual_seed(123))
            x = self.G.synthesis(self.G.mapping(z.to(self.device), None), noise_mode="const")
        x_hat = self.G.synthesis(self.E_ema(x), noise_mode="const")
        rows = torch.cat([x, x_hat.clamp(-1, 1)], 0)
        grid = rows.view(2, len(x), 3, x.shape[-2], x.shape[-1]).permute(0, 3, 1, 4, 2)
        grid = grid.reshape(2 * x.shape[-2], len(x) * x.shape[-1], 3)
        img = ((grid + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        from svgen.utils.io import atomic_path

        with atomic_path(path) as tmp:
            Image.fromarray(img).save(tmp, format="PNG")


def check_batch_split(batch: int, real_fraction: float, world_size: int) -> None:
    """SvgenError unless the generated and the real images of a batch split evenly over the processes."""
    n_real = int(round(batch * real_fraction))
    if n_real % world_size or (batch - n_real) % world_size:
        raise SvgenError(f"batch {batch} ({batch - n_real} generated + {n_real} real images) does not split "
                         f"evenly over {world_size} processes")


def _fixed_real(dataset: Any, resolution: int, device: torch.device, n: int = 8) -> Optional[torch.Tensor]:
    if dataset is None:
        return None
    idx = np.linspace(0, len(dataset) - 1, min(n, len(dataset))).round().astype(int)
    x = torch.from_numpy(np.stack([dataset[int(i)] for i in idx])).permute(0, 3, 1, 2)
    return _real_targets(x.to(device), resolution)


def _init_backbone(E: nn.Module, path: PathLike) -> None:
    """Initialise the IR-SE body from ArcFace weights (pSp starts from model_ir_se50.pth)."""
    from svgen.inversion.losses import ID_EXPECTED

    state = _load_weight_file(path, "backbone", ID_EXPECTED)
    mapped = arcface_to_backbone_state(state, E.backbone.cfg)
    mapped = {k: v for k, v in mapped.items() if k.startswith(("input_layer.", "stages."))}
    own = E.backbone.state_dict()
    bad = [k for k, v in mapped.items() if k not in own or own[k].shape != v.shape]
    if not mapped or bad:
        raise SvgenError(f"backbone weights do not fit the {E.cfg.preset} encoder "
                         f"({len(bad)} mismatched tensors); expected {ID_EXPECTED}", path)
    E.backbone.load_state_dict(mapped, strict=False)


def train_encoder(generator: PathLike, out: PathLike, data: Optional[PathLike] = None, *,
                  space: str = "w+", preset: str = "auto", steps: Optional[int] = None,
                  kimg: Optional[float] = None, batch: Optional[int] = None,
                  lr: Optional[float] = None, snapshot_every: Optional[int] = None, resume: bool = False,
                  lpips_weights: Optional[PathLike] = None, id_weights: Optional[PathLike] = None,
                  id_loss: str = "auto", backbone_weights: Optional[PathLike] = None, seed: int = 0,
                  device: torch.device | str = "cpu", show_progress: bool = True,
                  overrides: Optional[dict] = None,
                  stop_after: Optional[int] = None,
                  on_step: Optional[Callable[[int, dict], None]] = None) -> Path:
    """Train (or resume) an encoder; writes ``<out>/encoder.pt`` and returns its path.

    ``id_loss``: the identity net (:func:`~svgen.inversion.losses.build_identity_loss`; auto = dlib's
    ResNet, or ArcFace when ``id_weights`` is an ArcFace file). A loss that cannot be built is off with
    one :class:`~svgen.inversion.identity.LossOffWarning` naming the file to provide.
    ``overrides`` sets any other :class:`TrainEncoderConfig` (or :class:`EncoderConfig`) field. ``stop_after`` ends the call
    after that many steps (checkpoint written, no ``encoder.pt``), which tests use for resume.
    ``steps`` and ``snapshot_every`` count optimiser steps (one batch each), as in every trainer;
    a resumed run keeps its own ``snapshot_every`` unless one is given.
    """
    from svgen.stage1_image_gan.checkpoints import load_generator

    dist = init_distributed_on(torch.device(device))   # a world of one unless started by torchrun
    device = dist.device
    gen_path = Path(generator)
    if not gen_path.is_file():
        raise SvgenError("generator does not exist", gen_path)
    G = load_generator(gen_path, device=device)
    G.eval().requires_grad_(False)
    g_sha = file_sha256(gen_path)
    dataset = None
    if data is not None:
        from svgen.preprocessing.dataset import AlignedDataset

        dataset = AlignedDataset(data)
    # optional perceptual nets first: a wrong path fails before anything is written
    loss = ReconstructionLoss(lpips_weights=lpips_weights, id_weights=id_weights, identity=id_loss, device=device)
    if backbone_weights and not Path(backbone_weights).is_file():
        from svgen.inversion.losses import ID_EXPECTED

        raise SvgenError(f"backbone weights not found; expected {ID_EXPECTED}", backbone_weights)
    run = Run(out, resume, main=dist.is_main)

    if resume:
        ckpt = run.load_latest("svgen-encoder", required=("optimizer", "step"), what="encoder training",
                               map_location=device)
        check_generator_sha256(ckpt.get("generator_sha256", ""), g_sha, "cannot resume: the run was trained against",
                               run.latest, generator=gen_path)
        if dataset is not None:
            dataset.check_resume(ckpt.get("meta", {}).get("data_fingerprint"))
        saved = saved_train_config(ckpt["train_config"])
        saved.encoder = encoder_config_from_dict(ckpt["config"])
        length = steps if steps is not None else None if kimg is None else math.ceil(kimg * 1000 / saved.batch)
        cfg = resumed_config(saved, dataclasses.replace(saved, total_steps=length,  # extend or shorten
                                                        snapshot_every=snapshot_every))
    else:
        if preset == "auto":
            preset = "tiny" if G.img_resolution <= 64 else "ir_se50"
        enc_cfg = make_encoder_config(space, preset, G.num_ws, G.w_dim, G.img_resolution)
        b = int(batch or DEFAULT_BATCH[preset])
        total = steps if steps is not None else math.ceil((kimg if kimg is not None
                                                           else DEFAULT_KIMG[preset]) * 1000 / b)
        cfg = TrainEncoderConfig(encoder=enc_cfg, batch=b, total_steps=int(total),
                                 lr=float(lr if lr is not None else DEFAULT_LR[preset]), seed=int(seed))
        if snapshot_every is not None:
            cfg.snapshot_every = int(snapshot_every)
        for k, v in (overrides or {}).items():  # TrainEncoderConfig or EncoderConfig fields
            if k != "encoder" and hasattr(cfg, k):
                setattr(cfg, k, v)
            elif k not in ("space", "preset", "backbone") and hasattr(cfg.encoder, k):
                setattr(cfg.encoder, k, v)
            else:
                raise SvgenError(f"unknown training option {k!r}")
        if dataset is None:
            cfg.real_fraction = 0.0
    if cfg.total_steps <= 0:
        raise SvgenError(f"nothing to train: {cfg.total_steps} steps")
    if dataset is None and cfg.real_fraction > 0:
        raise SvgenError("this run was trained with real frames; pass --data to resume it")
    check_batch_split(cfg.batch, cfg.real_fraction if dataset is not None else 0.0, dist.world_size)

    seed_everything(cfg.seed)
    loss.set_weights(l2=cfg.l2, msssim=cfg.msssim, lpips=cfg.lpips, id=cfg.id)
    if loss.lpips is None and cfg.lpips > 0:
        warnings.warn(LossOffWarning(f"LPIPS loss off: give --lpips-weights ({LPIPS_EXPECTED})"), stacklevel=2)
    trainer = EncoderTrainer(G, cfg, dataset, device, loss, G.mapping.w_avg.detach().float(), dist)
    if resume:
        trainer.load_state(ckpt)
        del ckpt
    else:
        if backbone_weights:
            _init_backbone(trainer.E, backbone_weights)
            trainer.E_ema.load_state_dict(trainer.E.state_dict())
        run.save_config({"train": config_to_dict(cfg), "generator": str(gen_path),
                         "generator_sha256": g_sha, "data": None if data is None else str(data)})
    meta = {"generator": str(gen_path), "data": None if data is None else str(data),
            "data_fingerprint": None if dataset is None else dataset.fingerprint(),
            "lpips_weights": None if not lpips_weights else str(lpips_weights),
            "id_weights": None if not id_weights else str(id_weights),
            "id_loss": None if loss.id_loss is None else type(loss.id_loss).__name__}
    fixed = _fixed_real(dataset, G.img_resolution, device)

    def step() -> dict:
        logs = trainer.train_step()
        if on_step is not None:
            on_step(trainer.step, logs)
        return dict(kimg=trainer.step * cfg.batch / 1000, **logs)

    def snapshot(final: bool) -> None:
        """latest.pt (numbered every ``keep_every`` steps) and a reconstruction grid (process 0 writes)."""
        ck = encoder_checkpoint(trainer.E, trainer.E_ema, g_sha, meta,
                                train_config=config_to_dict(cfg), **trainer.state())
        run.save_checkpoint(ck, f"encoder-{trainer.step:07d}.pt" if trainer.step % cfg.keep_every == 0 else None)
        if dist.is_main:
            trainer.sample_grid(run.samples / f"recon-{trainer.step:07d}.png", fixed)

    end = cfg.total_steps if stop_after is None else min(cfg.total_steps, trainer.step + stop_after)
    try:
        fit(run, step, lambda: trainer.step, lambda: trainer.step >= end, snapshot, total=cfg.total_steps,
            log_every=cfg.log_every, snapshot_every=cfg.snapshot_every, log_last=True, desc="train-encoder",
            postfix=lambda logs: {"loss": f"{logs['loss']:.4f}"}, show_progress=show_progress and dist.is_main,
            reduce_stats=dist.mean_stats)
    finally:
        run.close()
    check_consistency([m for m in (trainer.E, trainer.E_ema, trainer.D_w) if m is not None], dist)
    final = Path(out) / "encoder.pt"
    if trainer.step >= cfg.total_steps and dist.is_main:
        done_meta = dict(meta, steps=trainer.step, kimg=trainer.step * cfg.batch / 1000, world_size=dist.world_size)
        torch_save_atomic(encoder_checkpoint(trainer.E, trainer.E_ema, g_sha, done_meta,
                                             train_config=config_to_dict(cfg)), final)
    dist.close()
    return final if trainer.step >= cfg.total_steps else run.latest
