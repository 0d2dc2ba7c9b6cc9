"""Training loop of StyleInV (``svgen train-motion --model styleinv``), StyleInV §3.4 / public code §2.

Reads top to bottom: config -> real data (W codes of ``latents.h5``; frames of ``aligned.zip`` in
image mode) -> frozen generator, SI (initialised from a trained W encoder), D, Adam, EMA -> per step

  SI: w_t = SI(x0 = G(w0), w0, z_m, t) at t = [0, t1, t2, t3] (FFA-ST);
      λ_adv softplus(−D([first frame, frames t1..t3], Δt))   first frame = w0 / x0 itself
      + λ_recon ‖frame(t=0) − first frame‖²                  latent-level (latent) / pixels (image)
      + λ_w mean_t ‖w_t − w0‖₂                               latent regulariser
  D:  softplus(D(fake)) + softplus(−D(real)) + lazy R1 (γ/2 ‖∇D‖², every 16 steps)

-> snapshots (``latest.pt`` + numbered, latent FD of EMA samples in ``metrics.jsonl``, a PNG preview)
-> ``<out>/motion.pt``. Adam (0, 0.99), lr 1e-4 for SI and 2e-3 for D (D's lr and betas rescaled for
the lazy R1), EMA of SI with a half-life of ``ema_kimg`` thousand clips.

First frames w0: ``w0_source="real"`` (default) uses the W codes of real first frames, as the
animation does with an inverted photo; ``"mapping"`` samples w0 = mapping(z) as in the paper.
The run folder, resume policy, lazy-regularised Adam, gradient scrubbing, the EMA and the outer loop
(``fit``) come from :mod:`svgen.training`; the losses from :mod:`svgen.nn.losses`.

Under ``torchrun`` (``--gpus N``) every process draws the random numbers of the whole batch (real windows,
first frames, generator times, motion noise, augmentation) from the shared seed and keeps its part
(:meth:`~svgen.training.dist.Dist.share_index`, which keeps D's minibatch-std groups whole); SI's
BatchNorm normalises over the whole batch and the gradients of SI and D are averaged, so N processes
follow one process with the same ``--batch``. Only process 0 evaluates and writes.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from svgen.inversion.backbone import BACKBONE_PRESETS
from svgen.stage2_motion.styleinv.model import (
    MODEL_NAME,
    EncoderConfig,
    StyleInV,
    StyleInVConfig,
    config_from_checkpoint,
    sample_motion_noise,
    styleinv_config_for,
)
from svgen.nn.losses import d_logistic_loss, g_nonsaturating_loss, r1_penalty
from svgen.stage2_motion.motion import MOTION_FORMAT as FORMAT
from svgen.stage2_motion.styleinv.data import (MOTION_KEPT_WARN, FrameClips, LatentClips, LayerMeanWarning,
                                               SparseClipSampler, SparseSamplingConfig)
from svgen.stage2_motion.styleinv.disc import DiscConfig, build_discriminator
from svgen.stage2_motion.styleinv.motion import StyleInVMotion
from svgen.stage2_motion.styleinv.transfer import encoder_config_from_file, init_encoder_from
from svgen.training import (Run, check_consistency, from_invocation, half_life_beta, init_distributed,
                            lazy_regularised_adam, optimizer_step, reduce_gradients, resumed_config, update_ema)
from svgen.training.loop import fit
from svgen.training.state import restore
from svgen.training.sync_bn import convert_batchnorm
from svgen.utils.config import config_from_dict, config_to_dict
from svgen.utils.errors import SvgenError
from svgen.utils.io import check_generator_sha256, file_sha256, require_file, torch_save_atomic
from svgen.utils.seed import get_rng_state, seed_everything, set_rng_state

VERSION = 1


@dataclass
class StyleInVTrainConfig:
    """Everything a StyleInV run depends on (``config.json`` and every checkpoint); a resumed run takes
    the fields marked ``from_invocation`` from the resuming command."""

    latents: str = from_invocation("")
    out: str = from_invocation("")
    generator: str = from_invocation("", if_given=True)
    encoder: Optional[str] = from_invocation(None, if_given=True)
    data: Optional[str] = from_invocation(None, if_given=True)   # aligned.zip (image mode)
    disc: str = "latent"               # "latent" | "image"
    steps: int = from_invocation(20000)
    batch: int = 16
    lr_si: float = 1e-4
    lr_d: float = 2e-3
    betas: tuple = (0.0, 0.99)
    r1_gamma: float = 1.0
    r1_interval: int = 16
    lambda_adv: float = 1.0
    lambda_recon: float = 10.0
    lambda_w_reg: float = 0.05
    ema_kimg: float = 20.0             # EMA half-life in thousands of clips
    ema_rampup: Optional[float] = 0.05  # half-life <= rampup * clips seen (None = off)
    w0_source: str = "real"            # "real" | "mapping"
    truncation_psi: float = 1.0        # for w0_source "mapping"
    noise_mode: str = "const"          # generator noise when rendering
    ada: bool = True                   # image mode: adaptive augmentation (bgc, target 0.6)
    ada_target: float = 0.6
    ada_kimg: float = 500.0
    sampling: SparseSamplingConfig = field(default_factory=SparseSamplingConfig)
    model: Optional[StyleInVConfig] = None
    d: Optional[DiscConfig] = None
    snapshot_every: int = from_invocation(1000)   # steps between checkpoints + metrics
    keep_every: int = from_invocation(5000)       # steps between numbered snapshots (0 = never)
    preview_every: int = from_invocation(0)       # steps between PNG previews (0 = at snapshots)
    log_every: int = from_invocation(20)
    eval_window: int = 16              # frames per window for the latent FD
    eval_windows: int = 64
    seed: int = 0
    device: str = from_invocation("auto")


# -- helpers --------------------------------------------------------------------------------------
def _abs(path: Optional[str]) -> Optional[str]:
    return None if not path else str(Path(path).resolve())


def _largest_divisor_le(n: int, k: int) -> int:
    return max(d for d in range(1, min(n, k) + 1) if n % d == 0)


def augment_clips(pipe: torch.nn.Module, x: torch.Tensor, total: Optional[int] = None,
                  share: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
    """ADA for clips [B, F, 3, H, W]: one set of random parameters per clip, shared by its frames.
    Data-parallel runs draw the parameters of all ``total`` clips and apply their ``share``."""
    B, Fr, C, H, W = x.shape
    n, share = (B, lambda t: t) if share is None else (total, share)
    G_inv = pipe.sample_geometry(n, H, W, x.device)
    if not torch.equal(G_inv, torch.eye(3, device=x.device).expand_as(G_inv)):
        x = pipe.apply_geometry(x.reshape(B, Fr * C, H, W), share(G_inv)).reshape(B, Fr, C, H, W)
    Cm = pipe.sample_color(n, x.device)
    if not torch.equal(Cm, torch.eye(4, device=x.device).expand_as(Cm)):
        x = pipe.apply_color(x.reshape(B * Fr, C, H, W), share(Cm).repeat_interleave(Fr, 0)).reshape(B, Fr, C, H, W)
    return x


# -- trainer --------------------------------------------------------------------------------------
class StyleInVTrainer:
    """Holds the run state; :meth:`train` runs to ``cfg.steps`` and writes ``<out>/motion.pt``."""

    def __init__(self, cfg: StyleInVTrainConfig, resume: bool = False):
        if cfg.disc not in ("latent", "image"):
            raise SvgenError(f"unknown discriminator mode {cfg.disc!r} (use latent or image)")
        if cfg.w0_source not in ("real", "mapping"):
            raise SvgenError(f"unknown w0 source {cfg.w0_source!r} (use real or mapping)")
        if cfg.steps < 1 or cfg.batch < 1:
            raise SvgenError(f"steps and batch must be positive (steps {cfg.steps}, batch {cfg.batch})")
        if not cfg.latents:
            raise SvgenError("StyleInV training needs --latents (a latents.h5 from svgen invert)")
        if not cfg.generator:
            raise SvgenError("StyleInV training needs --generator (it renders the first frame x0 = G(w0))")
        if cfg.disc == "image" and not cfg.data and not resume:
            raise SvgenError("--disc image needs --data aligned.zip (real frames for the discriminator)")
        self.dist = init_distributed(cfg.device)   # a world of one unless started by torchrun
        self.device = self.dist.device
        self.latents = LatentClips(cfg.latents)
        self.run = Run(cfg.out, resume, main=self.dist.is_main)
        state = self.run.load_latest(FORMAT, model=MODEL_NAME, what="StyleInV motion") if resume else None
        encoder_given = bool(cfg.encoder)
        if state is not None:
            cfg = self._merge_resume_config(cfg, state)
        self.cfg = cfg
        self.layer_lift = self.latents.layer_lift    # None for a W store; used by sample/animate --layer-lift on
        if self.dist.is_main:
            self._warn_motion_lost()
        self._load_generator()
        # a resumed run no longer needs the encoder it was initialised from (unless named again)
        self._check_encoder(required=state is None or encoder_given)
        self.train_fps = self.latents.train_fps
        seed_everything(cfg.seed)

        # data
        self.lat_sampler = SparseClipSampler(self.latents.lengths, cfg.sampling, self.latents.names, cfg.latents)
        self.frames = None
        if cfg.disc == "image":
            if not cfg.data:
                raise SvgenError("--disc image needs --data aligned.zip (real frames for the discriminator)")
            require_file(cfg.data, "dataset")
            self.frames = FrameClips(cfg.data, self.G.img_resolution)
            self.real_sampler = SparseClipSampler(self.frames.lengths, cfg.sampling, self.frames.names, cfg.data)
        else:
            self.real_sampler = self.lat_sampler

        # networks
        enc_init = None
        if cfg.model is None:
            if cfg.encoder:
                enc_cfg, bb_state, head, meta = encoder_config_from_file(cfg.encoder)
                enc_init = (bb_state, head, meta)
            else:   # no trained encoder: the published layout at random init, BN in training mode
                backbone = BACKBONE_PRESETS["tiny" if int(self.G.w_dim) < 512 else "ir_se50"]
                enc_cfg = EncoderConfig(backbone=dataclasses.replace(backbone),
                                        resolution=min(256, int(self.G.img_resolution)), bn_mode="train")
            cfg.model = styleinv_config_for(int(self.G.w_dim), int(self.G.num_ws), int(self.G.img_resolution),
                                            encoder=enc_cfg, nframes=cfg.sampling.nframes,
                                            max_period_len=float(cfg.sampling.nframes))
        if cfg.d is None:
            cfg.d = self._default_disc_config()
        cfg.d.mbstd_group_size = _largest_divisor_le(cfg.batch, 4)
        self._check_split()
        self.si = StyleInV(cfg.model).to(self.device)
        if cfg.model.encoder.bn_mode != "frozen":   # frozen BatchNorm uses running statistics only
            convert_batchnorm(self.si, self.dist)
        self.D = build_discriminator(cfg.d).to(self.device)
        self.init_summary = {}
        if state is None:
            if enc_init is not None:
                self.init_summary = init_encoder_from(self.si, enc_init[0], enc_init[1])
                self.init_summary["encoder_space"] = enc_init[2]["space"]
            self.si.w_avg.copy_(self.G.mapping.w_avg.detach().to(self.device).reshape(-1))
            if cfg.disc == "latent":
                self._set_disc_stats()
        self.si_ema = copy.deepcopy(self.si).eval().requires_grad_(False)
        self.opt_si = torch.optim.Adam(self.si.parameters(), lr=cfg.lr_si, betas=tuple(cfg.betas), eps=1e-8)
        self.opt_d = lazy_regularised_adam(self.D.parameters(), cfg.lr_d, cfg.betas, cfg.r1_interval)
        self.augment, self.ada = None, None
        if cfg.ada and cfg.disc == "image":
            from svgen.stage1_image_gan.augment import AdaptiveP, AugmentPipe

            self.augment = AugmentPipe().to(self.device)
            self.ada = AdaptiveP(self.augment, cfg.batch, target=cfg.ada_target, ada_kimg=cfg.ada_kimg)
        self.step = 0
        if state is not None:
            self._load_state(state)
        self._fd = None

    # -- setup --------------------------------------------------------------------------------
    def _check_split(self) -> None:
        """Data-parallel runs: the batch must split into whole minibatch-std groups, and generator noise
        must be constant (random noise would be drawn per process)."""
        if self.dist.world_size == 1:
            return
        self.dist.share_index(self.cfg.batch, self.cfg.d.mbstd_group_size)
        if self.cfg.noise_mode != "const":
            raise SvgenError(f"noise mode {self.cfg.noise_mode!r} cannot be split over processes (use const)")

    def share(self, x: torch.Tensor | list) -> torch.Tensor | list:
        """This process's part of a global batch (all of it with one process)."""
        return self.dist.share(x, self.cfg.d.mbstd_group_size)

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        return augment_clips(self.augment, x, self.cfg.batch, self.share if self.dist.world_size > 1 else None)

    def _merge_resume_config(self, cfg: StyleInVTrainConfig, state: dict) -> StyleInVTrainConfig:
        old = config_from_dict(StyleInVTrainConfig, state["config"]["train"])
        old.model = config_from_checkpoint(state)
        old.d = config_from_dict(DiscConfig, state["config"]["d"])
        old.sampling = config_from_dict(SparseSamplingConfig, state["config"]["train"]["sampling"])
        ref = state.get("latents_ref", {})
        if ref.get("clips") != self.latents.names or ref.get("num_frames") != sum(self.latents.lengths):
            raise SvgenError(f"--resume: the run was trained on other latents ({ref.get('path')})", cfg.latents)
        return resumed_config(old, cfg)

    def _load_generator(self) -> None:
        from svgen.stage1_image_gan.checkpoints import load_generator

        cfg = self.cfg
        require_file(cfg.generator, "generator")
        self.generator_sha256 = file_sha256(cfg.generator)
        check_generator_sha256(self.latents.generator_sha256, self.generator_sha256, "latents were made with",
                               cfg.latents, generator=cfg.generator)
        self.G = load_generator(cfg.generator, device=self.device).eval().requires_grad_(False)
        if int(self.G.w_dim) != self.latents.w_dim or int(self.G.num_ws) != self.latents.num_ws:
            raise SvgenError(f"latents (num_ws {self.latents.num_ws}, w_dim {self.latents.w_dim}) do not fit the "
                             f"generator (num_ws {self.G.num_ws}, w_dim {self.G.w_dim})", cfg.latents)

    def _check_encoder(self, required: bool = True) -> None:
        cfg = self.cfg
        self.encoder_sha256 = ""
        if not cfg.encoder or (not required and not Path(cfg.encoder).is_file()):
            return
        require_file(cfg.encoder, "encoder")
        self.encoder_sha256 = file_sha256(cfg.encoder)
        from svgen.utils.rundir import load_checkpoint

        ck = load_checkpoint(cfg.encoder, expect_format="svgen-encoder")
        check_generator_sha256(ck.get("generator_sha256", ""), self.generator_sha256, "encoder was trained against",
                               cfg.encoder, generator=cfg.generator)

    def _default_disc_config(self) -> DiscConfig:
        cfg, mc = self.cfg, self.cfg.model
        small = mc.w_dim < 512
        d = DiscConfig(mode=cfg.disc, num_frames=cfg.sampling.frames_per_clip,
                       max_gap=int(cfg.sampling.nframes), w_dim=mc.w_dim,
                       gap_embed_dim=64 if small else 256, cmap_dim=mc.w_dim if small else 512,
                       hidden=2 * mc.w_dim if small else 512, img_resolution=int(self.G.img_resolution),
                       num_fourier=max(1, int(math.log2(max(2, cfg.sampling.nframes)))))
        gcfg = getattr(self.G, "cfg", None)
        if cfg.disc == "image" and gcfg is not None:
            d.channel_base = int(getattr(gcfg, "channel_base", d.channel_base))
            d.channel_max = int(getattr(gcfg, "channel_max", d.channel_max))
        return d

    def _set_disc_stats(self) -> None:
        codes = torch.from_numpy(self.latents.all_codes()).float()
        clips, starts, t = self.real_sampler.sample_real(min(2048, 64 * self.cfg.batch))
        w = self.latents.gather(clips, starts, t)
        self.D.set_stats(codes.to(self.device), (w[:, 1:] - w[:, :1]).reshape(-1, w.shape[-1]).to(self.device))

    def _load_state(self, st: dict) -> None:
        restore(st, {"SI": self.si, "ema": self.si_ema, "D": self.D, "opt_SI": self.opt_si, "opt_D": self.opt_d,
                     "ada": self.ada}, optional=("ada",))
        self.step = int(st["step"])
        set_rng_state(st["rng"])

    def _warn_motion_lost(self) -> None:
        """Warn when StyleInV's W codes keep < 70 % of a W+ store's motion (its mean over layers), and
        say what the layer lift brings back."""
        kept, lift = self.latents.motion_kept, self.layer_lift
        if kept >= MOTION_KEPT_WARN:                         # 1.0 for a W store
            return
        back = (" Its samples will move that much less." if lift is None else
                f" `svgen sample/animate` lift it back onto the layers (--layer-lift auto, the default; this "
                f"store's lift reconstructs {100 * math.sqrt(max(lift.r2, 0.0)):.0f} % of it).")
        warnings.warn(LayerMeanWarning(
            f"{self.cfg.latents}: StyleInV trains in W on this W+ store's mean over layers, which keeps only "
            f"{100 * kept:.0f} % of its motion.{back} For a W store, "
            f"invert with a W encoder (train-encoder --space w) and --refine-steps"), stacklevel=3)

    def latents_ref(self) -> dict:
        return {"path": _abs(self.cfg.latents), "clips": list(self.latents.names),
                "num_frames": int(sum(self.latents.lengths)), "space": self.latents.space,
                "num_ws": int(self.latents.num_ws), "w_dim": int(self.latents.w_dim), "fps": self.train_fps,
                "motion_kept": round(float(self.latents.motion_kept), 4),
                "layer_lift": None if self.layer_lift is None else self.layer_lift.summary(),
                "generator_sha256": self.latents.generator_sha256, "encoder_sha256": self.latents.encoder_sha256}

    def checkpoint(self, full: bool = True) -> dict:
        """The motion.pt dict; ``full`` adds optimizer, RNG and step for ``--resume``."""
        cfg = self.cfg
        train = config_to_dict(cfg)
        train.pop("model", None)
        train.pop("d", None)
        ckpt = {"format": FORMAT, "version": VERSION, "model": MODEL_NAME,
                "config": {"model": config_to_dict(cfg.model), "d": config_to_dict(cfg.d), "train": train},
                "SI": self.si.state_dict(), "ema": self.si_ema.state_dict(), "D": self.D.state_dict(),
                "latents_ref": self.latents_ref(), "generator_sha256": self.generator_sha256,
                "generator_path": _abs(cfg.generator), "encoder_path": _abs(cfg.encoder),
                "encoder_sha256": self.encoder_sha256, "train_fps": self.train_fps,
                "noise_mode": cfg.noise_mode, "meta": {"step": self.step, "init": self.init_summary},
                "layer_lift": None if self.layer_lift is None else self.layer_lift.to_dict()}
        if full:
            ckpt.update({"opt_SI": self.opt_si.state_dict(), "opt_D": self.opt_d.state_dict(),
                         "rng": get_rng_state(), "step": self.step})
            if self.ada is not None:
                ckpt["ada"] = self.ada.state_dict()
        return ckpt

    # -- data of one step ---------------------------------------------------------------------
    def render(self, w: torch.Tensor) -> torch.Tensor:
        """W codes [N, w_dim] -> images [N, 3, R, R] through the frozen generator."""
        ws = w[:, None, :].expand(-1, self.cfg.model.num_ws, -1)
        return self.G.synthesis(ws, noise_mode=self.cfg.noise_mode)

    def first_frames(self, batch: int, w_real: Optional[torch.Tensor]) -> torch.Tensor:
        """w0 [b, w_dim] (this process's part of ``batch``): real first frames (of this batch's real
        clips in latent mode) or mapping(z)."""
        cfg = self.cfg
        if cfg.w0_source == "mapping":
            z = self.share(torch.randn(batch, int(self.G.z_dim))).to(self.device)
            with torch.no_grad():
                return self.G.mapping(z, truncation_psi=cfg.truncation_psi)[:, 0]
        if w_real is not None:
            return w_real[:, 0]
        clips, starts = self.lat_sampler.sample_first_frames(batch)
        return self.latents.first_frames(self.share(clips), self.share(starts)).to(self.device)

    def real_batch(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's part of ``batch`` real clips: W codes [b, 4, w_dim] or frames [b, 4, 3, R, R],
        and their times [b, 4]."""
        clips, starts, t = self.real_sampler.sample_real(batch)
        clips, starts, t = self.share(clips), self.share(starts), self.share(t)
        src = self.latents if self.cfg.disc == "latent" else self.frames
        return src.gather(clips, starts, t).to(self.device), t.to(self.device)

    def generate(self, si: StyleInV, x0: torch.Tensor, w0: torch.Tensor, t: torch.Tensor,
                 t_all: Optional[torch.Tensor] = None) -> torch.Tensor:
        """SI's codes at times ``t`` [b, 4]; the motion noise is drawn for the whole batch (times
        ``t_all``, default ``t``) and shared out."""
        t_all = t if t_all is None else t_all
        L = si.ffa_ape.num_anchors(max(float(t_all.max()), self.cfg.sampling.nframes - 1))
        z_m = sample_motion_noise(t_all.shape[0], L, self.cfg.model.z_motion_dim)
        if t_all is not t:
            z_m = self.share(z_m)
        return si(x0, w0, z_m.to(self.device), t)

    # -- one optimisation step ----------------------------------------------------------------
    def train_step(self) -> dict:
        cfg, si, D = self.cfg, self.si, self.D
        B = cfg.batch
        latent = cfg.disc == "latent"
        reduce = functools.partial(reduce_gradients, dist=self.dist) if self.dist.world_size > 1 else None
        real, t_real = self.real_batch(B)                                  # this process's b = B / N
        w0 = self.first_frames(B, real if (latent and cfg.w0_source == "real") else None)
        with torch.no_grad():
            x0 = self.render(w0)                                           # [b, 3, R, R]
        t_all = self.real_sampler.sample_fake_times(B)                     # [B, 4]
        t_fake = self.share(t_all).to(self.device)                         # [b, 4]

        # SI: adversarial + first-frame reconstruction + latent regulariser
        D.requires_grad_(False)
        w_fake = self.generate(si, x0, w0, t_fake, t_all)                  # [b, 4, W]
        if latent:
            clip_fake = torch.cat([w0[:, None], w_fake[:, 1:]], dim=1)
            recon = (w_fake[:, 0] - w0).square().mean()
        else:
            imgs = self.render(w_fake.reshape(-1, w_fake.shape[-1])).reshape(len(x0), -1, *x0.shape[1:])
            clip_fake = torch.cat([x0[:, None], imgs[:, 1:]], dim=1)       # [b, 4, 3, R, R]
            recon = (imgs[:, 0] - x0).square().mean()
        d_in = self._augment(clip_fake) if self.augment is not None else clip_fake
        adv = g_nonsaturating_loss(D(d_in, t_fake)).mean()
        w_reg = (w_fake - w0[:, None]).norm(dim=-1).mean()
        loss_si = cfg.lambda_adv * adv + cfg.lambda_recon * recon + cfg.lambda_w_reg * w_reg
        optimizer_step(self.opt_si, si.parameters(), loss_si, reduce=reduce)

        # D: logistic loss, lazy R1 on real clips
        D.requires_grad_(True)
        fake_in = clip_fake.detach()
        if self.augment is not None:
            fake_in = self._augment(fake_in)
        do_r1 = cfg.r1_interval > 0 and cfg.r1_gamma > 0 and self.step % cfg.r1_interval == 0
        real_in = real.detach().requires_grad_(do_r1)
        real_aug = self._augment(real_in) if self.augment is not None else real_in
        logits_real = D(real_aug, t_real)
        logits_fake = D(fake_in, t_fake)
        loss_d = d_logistic_loss(logits_real, logits_fake)
        stats = {}
        if do_r1:
            scale = D.input_scale() if hasattr(D, "input_scale") else None
            r1 = r1_penalty(logits_real, real_in, scale)
            loss_d = loss_d + r1.mean() * (cfg.r1_gamma / 2) * cfg.r1_interval
            stats["r1"] = float(r1.detach().mean())
        optimizer_step(self.opt_d, D.parameters(), loss_d, reduce=reduce)
        if self.ada is not None:
            self.ada.accumulate(logits_real)
            rt = self.ada.step(self.step, all_reduce=self.dist.all_reduce_sum if reduce is not None else None)
            if rt is not None:
                stats.update(ada_p=float(self.augment.p), ada_rt=rt)

        self.step += 1
        update_ema(self.si_ema, si, half_life_beta(B, self.step * B, cfg.ema_kimg, cfg.ema_rampup))
        stats.update({k: float(v.detach()) for k, v in dict(
            loss_si=loss_si, adv=adv, recon=recon, w_reg=w_reg, loss_d=loss_d,
            d_real=logits_real.mean(), d_fake=logits_fake.mean()).items()})
        return stats

    # -- evaluation ---------------------------------------------------------------------------
    def motion_model(self) -> StyleInVMotion:
        """The EMA model wrapped for sampling (shares the loaded generator)."""
        m = StyleInVMotion(copy.deepcopy(self.si_ema), generator_sha256=self.generator_sha256,
                           generator_path=_abs(self.cfg.generator), encoder_path=_abs(self.cfg.encoder),
                           train_fps=self.train_fps, noise_mode=self.cfg.noise_mode, device=self.device,
                           layer_lift=self.layer_lift)
        m.attach_generator(self.G)
        return m

    def evaluate(self) -> dict:
        """Latent FD of EMA trajectories (w0 = real first frames) vs real windows, and the
        first-frame error ‖w_0 − w0‖ (RMS over dims)."""
        from svgen.metrics.latent_fd import LatentFD

        cfg = self.cfg
        if self._fd is None:
            window = min(cfg.eval_window, max(self.latents.lengths))
            self._real_windows = self.latents.windows(window, max_windows=cfg.eval_windows)
            self._fd = LatentFD(self._real_windows) if len(self._real_windows) >= 2 and window >= 2 else False
        real = self._real_windows
        m = self.motion_model()
        gen_state = torch.get_rng_state()
        fake = m.sample_w(len(real), real.shape[1], seed=cfg.seed + 4242, fps=self.train_fps,
                          w0=torch.from_numpy(real[:, 0])).numpy()
        torch.set_rng_state(gen_state)
        first = float(np.sqrt(((fake[:, 0] - real[:, 0]) ** 2).mean()))
        return {"latent_fd": float(self._fd(fake)) if self._fd else None, "first_frame_rms": first,
                "motion_rms": float(np.sqrt(((fake - fake[:, :1]) ** 2).mean())),
                "real_motion_rms": float(np.sqrt(((real - real[:, :1]) ** 2).mean()))}

    @torch.no_grad()
    def preview(self) -> Path:
        """PNG grid: rows = 4 real first frames, columns = EMA frames at t = 0, 4, 8, ..."""
        from PIL import Image

        m = self.motion_model()
        clips, starts = self.lat_sampler.sample_first_frames(4, generator=torch.Generator().manual_seed(1))
        w0 = self.latents.first_frames(clips, starts)
        gen_state = torch.get_rng_state()
        w = m.sample_w(4, 29, seed=777, w0=w0)[:, ::4]                      # [4, 8, W]
        torch.set_rng_state(gen_state)
        imgs = self.render(w.reshape(-1, w.shape[-1]).to(self.device)).clamp(-1, 1)
        R = imgs.shape[-1]
        grid = ((imgs + 1) * 127.5).round().byte().cpu().reshape(4, 8, 3, R, R)
        grid = grid.permute(0, 3, 1, 4, 2).reshape(4 * R, 8 * R, 3).numpy()
        out = self.run.samples / f"preview-{self.step:07d}.png"
        from svgen.utils.io import atomic_path

        with atomic_path(out) as tmp:
            Image.fromarray(grid).save(tmp, format="PNG")
        return out

    # -- loop ---------------------------------------------------------------------------------
    def _snapshot(self, final: bool = False) -> None:
        cfg = self.cfg
        if not self.dist.is_main:
            return
        metrics = self.evaluate()
        self.run.log_metrics(step=self.step, clips=self.step * cfg.batch, **metrics)
        keep = cfg.keep_every and self.step % cfg.keep_every == 0 and not final
        self.run.save_checkpoint(self.checkpoint(full=True))
        if keep:
            torch_save_atomic(self.checkpoint(full=False), self.run.checkpoints / f"motion-{self.step:07d}.pt")
        if not cfg.preview_every or final:
            self.preview()

    def train(self) -> Path:
        """Train to ``cfg.steps`` (resumable at any snapshot) and write ``<out>/motion.pt``."""
        cfg = self.cfg
        self.run.save_config({"model": config_to_dict(cfg.model), "d": config_to_dict(cfg.d),
                              "train": {k: v for k, v in config_to_dict(cfg).items() if k not in ("model", "d")}})
        if self.step == 0 and self.dist.is_main:
            metrics = self.evaluate()
            protocol = self._fd.protocol() if self._fd else None
            self.run.log_metrics(step=0, clips=0, **metrics, latent_fd_protocol=protocol)
        self.si.train()
        self.D.train()
        try:
            fit(self.run, self.train_step, lambda: self.step, lambda: self.step >= cfg.steps, self._snapshot,
                total=cfg.steps, log_every=cfg.log_every, snapshot_every=cfg.snapshot_every,
                preview_every=cfg.preview_every if self.dist.is_main else 0, preview=self.preview,
                desc=f"train-motion (styleinv, {cfg.disc})",
                postfix=lambda st: {"D": f"{st['loss_d']:.3g}", "SI": f"{st['loss_si']:.3g}",
                                    "rec": f"{st['recon']:.2g}"},
                show_progress=self.dist.is_main, reduce_stats=self.dist.mean_stats)
        finally:
            self.run.close()
        return self.export()

    def export(self) -> Path:
        """``<out>/motion.pt`` (process 0), after checking that all processes hold the same weights."""
        out = Path(self.cfg.out) / "motion.pt"
        check_consistency([self.si, self.si_ema, self.D], self.dist)
        if self.dist.is_main:
            torch_save_atomic(self.checkpoint(full=False), out)
        self.dist.close()
        return out


def train_styleinv(cfg: StyleInVTrainConfig, resume: bool = False) -> Path:
    """Train StyleInV as configured; returns the path of ``<out>/motion.pt``."""
    return StyleInVTrainer(cfg, resume=resume).train()


def run_from_cli(latents: Optional[str] = None, out: Optional[str] = None, epochs: Optional[int] = None,
                 steps: Optional[int] = None, batch: Optional[int] = None, window: Optional[int] = None,
                 generator: Optional[str] = None, encoder: Optional[str] = None, data: Optional[str] = None,
                 disc: Optional[str] = None, preview_every: Optional[int] = None,
                 snapshot_every: Optional[int] = None, lr: Optional[float] = None, resume: bool = False,
                 seed: int = 0, device: str = "auto", **ignored: Any) -> Path:
    """Entry point of ``svgen train-motion --model styleinv`` (options as the CLI passes them).

    ``steps`` sets the length; without it, ``epochs`` counts passes of one clip per real frame
    (ceil(frames / batch) steps each); ``window`` sets the sampling window ``nframes``;
    ``snapshot_every`` is in steps (a killed run resumes from its last snapshot); ``lr`` is SI's
    learning rate (a resumed run keeps its own).
    """
    if not out:
        raise SvgenError("train-motion needs --out")
    cfg = StyleInVTrainConfig(latents=latents or "", out=out, generator=generator or "", encoder=encoder,
                              data=data, disc=disc or "latent", seed=int(seed), device=device)
    if batch is not None:
        cfg.batch = int(batch)
    if window is not None:
        if int(window) < 3:
            raise SvgenError(f"--window must be at least 3 frames for StyleInV, got {window}")
        cfg.sampling.nframes = int(window)
    if preview_every:
        cfg.preview_every = int(preview_every)
    if lr is not None:
        if not lr > 0:
            raise SvgenError(f"--lr must be positive, got {lr}")
        cfg.lr_si = float(lr)
    if snapshot_every is not None:
        cfg.snapshot_every = int(snapshot_every)
    if steps is not None:
        cfg.steps = int(steps)
    elif epochs is not None:
        if not latents:
            raise SvgenError("StyleInV training needs --latents (a latents.h5 from svgen invert)")
        from svgen.inversion.latent_store import LatentStore

        with LatentStore(latents) as store:
            frames = store.total_frames
        cfg.steps = max(1, int(epochs) * math.ceil(frames / cfg.batch))
    cfg.snapshot_every = max(1, min(cfg.snapshot_every, cfg.steps))
    return train_styleinv(cfg, resume=bool(resume))
