"""Training loop of the StyleVideoGAN GRU motion model (``svgen train-motion --model gru``).

Reads top to bottom: config -> data (windows streamed from latents.h5) + PCA for the offset trick ->
networks, Adam, EMA -> per batch one critic step (WGAN-GP), and every ``n_critic`` batches one
generator step (WGAN + gradient angle penalty) -> snapshots (checkpoint, latent FD and loop score into metrics.jsonl,
optional rendered preview) -> ``<out>/motion.pt``. No frame is rendered during training except
the optional previews. The run folder, resume policy, EMA and the outer loop (``fit``: log, preview
and snapshot cadences, all in steps) come from :mod:`svgen.training`; this module keeps the data
position (epoch, batch in epoch) and :meth:`GRUTrainer.train_step`.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np
import torch

from svgen.stage2_motion.gru.data import WindowSampler
from svgen.stage2_motion.gru.model import GRUMotionConfig, MotionGenerator, TemporalCritic
from svgen.stage2_motion.motion import MOTION_FORMAT as FORMAT
from svgen.stage2_motion.calibration import MotionCalibration, calibrate_from_store
from svgen.stage2_motion.offset import PCABasis, fit_pca_from_store
from svgen.stage2_motion.gru.penalties import (
    gap_distance, gradient_angle_penalty, gradient_penalty, gradient_penalty_first_layer, wgan_critic_loss,
    wgan_generator_loss,
)
from svgen.training import Run, from_invocation, legacy_default, resumed_config, saved_config, update_ema, warmup_beta
from svgen.training.loop import fit
from svgen.training.state import restore, state_dicts
from svgen.utils.config import config_to_dict
from svgen.utils.device import select_device
from svgen.utils.errors import SvgenError
from svgen.utils.io import file_sha256, require_file, torch_save_atomic
from svgen.utils.prefetch import prefetch
from svgen.utils.rundir import load_checkpoint
from svgen.utils.seed import get_rng_state, seed_everything, set_rng_state

PENALTY_UNITS = ("raw", "normalised")
VERSION = 1
CADENCES = {"snapshot_every": 200, "keep_every": 1000, "preview_every": 0}   # defaults, in steps


@dataclass
class GRUTrainConfig:
    """Everything a GRU motion run depends on (saved as ``config.json`` and in every checkpoint).

    A resumed run keeps its architecture and hyper-parameters; the fields marked ``from_invocation``
    (length, snapshots, paths, device) come from the resuming command."""

    latents: str = from_invocation("")
    out: str = from_invocation("")
    model: GRUMotionConfig = field(default_factory=GRUMotionConfig)
    epochs: int = from_invocation(350)     # paper: 350 epochs (passes over all windows)
    steps: Optional[int] = from_invocation(None)   # training length in steps (critic steps = batches);
                                      # when given it replaces ``epochs``
    batch: int = 32
    stride: Optional[int] = None      # window stride within a clip (default: the window, see data.py)
    lr_G: float = 2e-4                # the paper gives no rates or critic schedule: equal rates and 5
    lr_C: float = 2e-4                # critic steps per G step train with the raw-unit penalty
    betas: Tuple[float, float] = (0.5, 0.999)
    lambda_gp: float = 50.0           # paper
    penalty_units: str = legacy_default("raw", legacy="normalised")  # C's gradient w.r.t. raw W+ codes
                                      # (paper) or "normalised" (see gru.py); runs from before: normalised
    n_critic: int = legacy_default(5, legacy=1)  # critic steps (batches) per generator step
                                      # (benchmarks/gru_penalty.py); runs from before the option: 1
    lambda_gap: float = 100.0         # paper; 0 switches the gradient angle penalty off
    gap_momentum: float = 0.99        # running statistics of l_{t-1} - l_0
    ema: float = 0.995                # paper: generator EMA momentum (ramped up: training.ema.warmup_beta)
    pca_components: int = 32          # paper: offset-trick PCA
    calibrate: bool = True            # fit the motion spread calibration at export (stage2_motion/calibration.py)
    calibration_window: int = 100     # frames per window it compares (capped at the longest clip)
    calibration_max_gain: float = 3.0
    # cadences, in steps like ``steps`` (None: the defaults below; a resumed run keeps its own unless given)
    snapshot_every: Optional[int] = from_invocation(None, if_given=True)  # checkpoint + metrics
    keep_every: Optional[int] = from_invocation(None, if_given=True)      # numbered EMA-only snapshot (0: never)
    preview_every: Optional[int] = from_invocation(None, if_given=True)   # rendered preview (0: off; needs a generator)
    cadence_unit: str = legacy_default("steps", legacy="epochs")  # what the cadences count: runs saved before
                                      # they counted steps counted epochs (converted on load: cadence_in_steps)
    preview_num: int = 3
    preview_frames: int = 100
    eval_windows: int = 128           # real/fake windows for the latent FD at snapshots
    eval_long_frames: int = 250       # length of the trajectories scored for looping
    eval_long_num: int = 4
    log_every: int = 10               # steps between log.jsonl lines
    generator: Optional[str] = from_invocation(None, if_given=True)
    encoder: Optional[str] = from_invocation(None, if_given=True)
    seed: int = 0
    device: str = from_invocation("auto")
    fused: bool = True                # exact re-association of G's last / C's first layer (see train_step)


# -- helpers --------------------------------------------------------------------------------------
def cadence_in_steps(cfg: GRUTrainConfig, batches_per_epoch: int) -> GRUTrainConfig:
    """``cfg`` with its cadences in steps: a config saved when they counted epochs is converted at
    ``batches_per_epoch`` steps an epoch (exact when every epoch has that many batches); unset cadences
    take their defaults (:data:`CADENCES`)."""
    out = dataclasses.replace(cfg, cadence_unit="steps")
    for name, default in CADENCES.items():
        value = getattr(cfg, name)
        if value is None:
            value = default
        elif cfg.cadence_unit == "epochs":
            value = int(value) * int(batches_per_epoch)
        setattr(out, name, int(value))
    return out


def _abs(path: Optional[str]) -> Optional[str]:
    return None if path is None else str(Path(path).resolve())


class _Frozen:
    """Detached views of the tensors of G that ``first_layer_of_generated`` reads (critic step)."""

    def __init__(self, G: MotionGenerator):
        self.A, self.b = G.A.detach(), G.b.detach()
        self.w_mean, self.w_std = G.w_mean, G.w_std


def draw_noise(batch: int, window: int, dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """i [B, 32] and s [B, t-1, 32] from the global torch RNG (on CPU, so runs match across devices)."""
    i = torch.randn(batch, dim)
    s = torch.randn(batch, window - 1, dim)
    return i.to(device), s.to(device)


def latents_ref(store: Any) -> dict:
    """What the model was trained on (recorded in motion.pt; checked on --resume)."""
    return {"path": str(Path(store.path).resolve()), "clips": list(store.clips),
            "num_frames": int(store.total_frames), "space": store.space, "num_ws": int(store.num_ws),
            "w_dim": int(store.w_dim), "fps": float(store.fps(store.clips[0])),
            "generator_sha256": store.generator_sha256, "encoder_sha256": store.encoder_sha256}


def motion_checkpoint(cfg: GRUTrainConfig, G: MotionGenerator, G_ema: MotionGenerator,
                      C: Optional[TemporalCritic], pca: PCABasis, ref: dict, generator_sha256: str,
                      meta: Optional[dict] = None) -> dict:
    """The ``motion.pt`` dict (docs/FORMATS.md); ``C`` None gives a light EMA-only snapshot."""
    ckpt = {"format": FORMAT, "version": VERSION, "model": "gru", "config": config_to_dict(cfg),
            "ema": G_ema.state_dict(), "latents_ref": ref, "pca": pca.to_dict(),
            "generator_sha256": generator_sha256, "generator_path": _abs(cfg.generator),
            "encoder_path": _abs(cfg.encoder), "train_fps": float(ref.get("fps", 25.0)),
            "meta": dict(meta or {})}
    if C is not None:
        ckpt["G"] = G.state_dict()
        ckpt["critic"] = C.state_dict()
    return ckpt


# -- trainer --------------------------------------------------------------------------------------
class GRUTrainer:
    """Holds the run state; ``train()`` runs to ``cfg.epochs`` (or ``cfg.steps``) and exports."""

    def __init__(self, cfg: GRUTrainConfig, resume: bool = False):
        from svgen.inversion.latent_store import LatentStore

        self.device = select_device(cfg.device)
        self.store = LatentStore(cfg.latents)
        self.run = Run(cfg.out, resume)
        state = self.run.load_latest(FORMAT, model="gru", what="GRU motion") if resume else None
        if state is not None:
            cfg = self._merge_resume_config(cfg, state)
        check_config(cfg)
        mc = cfg.model
        if mc.num_ws != self.store.num_ws or mc.w_dim != self.store.w_dim:
            mc.num_ws, mc.w_dim = self.store.num_ws, self.store.w_dim
        self.sampler = WindowSampler(self.store, mc.window, cfg.batch, stride=cfg.stride, seed=cfg.seed)
        self.cfg = cfg = cadence_in_steps(cfg, self.sampler.batches_per_epoch(0))   # defaults for unset ones
        self._check_artifacts()
        self.ref = latents_ref(self.store)
        seed_everything(cfg.seed)

        self.G = MotionGenerator(mc).to(self.device)
        self.C = TemporalCritic(mc).to(self.device)
        self.G.gap_stats.momentum = cfg.gap_momentum
        if state is None:
            self.pca = fit_pca_from_store(self.store, n_components=cfg.pca_components)
            mean = torch.from_numpy(self.pca.mean.reshape(mc.num_ws, mc.w_dim)).float()
            std = float(np.sqrt(np.mean(self.pca.feature_var))) if self.pca.feature_var is not None else 1.0
            std = std if std > 1e-8 else 1.0
            self.G.set_data_stats(mean, std)
            self.C.set_data_stats(mean, std)
            if cfg.penalty_units == "raw":
                self.C.scale_input_layer(std)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_G, betas=tuple(cfg.betas),
                                      foreach=True)
        self.opt_C = torch.optim.Adam(self.C.parameters(), lr=cfg.lr_C, betas=tuple(cfg.betas),
                                      foreach=True)
        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0
        if state is not None:
            self._load_state(state)
        self._eval = None   # lazily built latent-FD reference

    # -- setup --------------------------------------------------------------------------------
    def _merge_resume_config(self, cfg: GRUTrainConfig, state: dict) -> GRUTrainConfig:
        ref = state.get("latents_ref", {})
        if ref.get("num_frames") != self.store.total_frames or ref.get("clips") != list(self.store.clips):
            raise SvgenError("--resume: the run was trained on other latents "
                             f"({ref.get('path')})", cfg.latents)
        saved = saved_config(GRUTrainConfig, state["config"])
        if saved.cadence_unit == "epochs":     # saved before the cadences counted steps
            sampler = WindowSampler(self.store, saved.model.window, saved.batch, stride=saved.stride, seed=saved.seed)
            saved = cadence_in_steps(saved, sampler.batches_per_epoch(0))
        return resumed_config(saved, cfg)

    def _check_artifacts(self) -> None:
        cfg = self.cfg
        self.generator_sha256 = self.store.generator_sha256
        if cfg.generator:
            require_file(cfg.generator, "generator")
            sha = file_sha256(cfg.generator)
            self.store.check_generator(sha, cfg.generator)
            self.generator_sha256 = sha
        if cfg.encoder:  # recorded for animate: it must be an encoder, not any file
            load_checkpoint(cfg.encoder, expect_format="svgen-encoder")
        if cfg.preview_every and not cfg.generator:
            raise SvgenError("--preview-every needs --generator to render previews")

    def _load_state(self, st: dict) -> None:
        restore(st, {"G": self.G, "ema": self.G_ema, "critic": self.C, "opt_G": self.opt_G, "opt_C": self.opt_C})
        self.pca = PCABasis.from_dict(st["pca"])
        self.epoch, self.batch_in_epoch, self.step = int(st["epoch"]), int(st["batch_in_epoch"]), int(st["step"])
        set_rng_state(st["rng"])

    def state_dict(self) -> dict:
        ckpt = motion_checkpoint(self.cfg, self.G, self.G_ema, self.C, self.pca, self.ref, self.generator_sha256)
        ckpt.update(state_dicts({"opt_G": self.opt_G, "opt_C": self.opt_C}))
        ckpt.update({"rng": get_rng_state(), "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                     "step": self.step})
        return ckpt

    # -- one optimisation step ----------------------------------------------------------------
    def gp_input_scale(self) -> float | torch.Tensor:
        """``input_scale`` of the gradient penalty: 1 for raw W+ units, the critic's w_std for normalised."""
        return 1.0 if self.cfg.penalty_units == "raw" else self.C.w_std

    def train_step(self, real: torch.Tensor, generator_step: bool = True) -> dict:
        """One critic step (WGAN-GP) on a batch of real windows and, if ``generator_step``, one
        generator step (WGAN + GAP).

        Both steps use the same generated batch (one forward of G per step, as in the DCGAN
        recipe): the critic sees it detached, the generator step back-propagates through it.
        With ``cfg.fused`` (default) the critic reads generated windows through
        ``TemporalCritic.first_layer_of_generated`` and penalises gradients with
        ``gradient_penalty_first_layer``: the same losses and gradients as the literal
        computation (``fused=False``, kept as the reference), about 4x fewer FLOPs.
        """
        cfg, G, C = self.cfg, self.G, self.C
        b, t = real.shape[:2]
        use_gap = cfg.lambda_gap > 0 and generator_step
        i, s = draw_noise(b, t, cfg.model.latent_dim, self.device)
        i.requires_grad_(use_gap)
        s.requires_grad_(use_gap)
        with torch.set_grad_enabled(generator_step):
            l, _ = G.motion(i, s)                              # [B, t, 32]
            y = G.T(l) if cfg.fused else G.to_wplus(l)         # before G's affine maps / W+ windows

        # critic: E[C(fake)] - E[C(real)] + lambda_GP L_GP
        C.requires_grad_(True)
        scale = self.gp_input_scale()
        if cfg.fused:
            h_real = C.first_layer(real)                       # [B, t, H1]
            h_fake = C.first_layer_of_generated(_Frozen(G), y.detach())   # G's side detached
            c_real, c_fake = C.from_first_layer(h_real), C.from_first_layer(h_fake)
            gp = gradient_penalty_first_layer(C, h_real, h_fake, input_scale=scale)
        else:
            c_real, c_fake = C(real), C(y.detach())
            gp = gradient_penalty(C, real, y.detach(), input_scale=scale)
        loss_C = wgan_critic_loss(c_real, c_fake) + cfg.lambda_gp * gp
        self.opt_C.zero_grad(set_to_none=True)
        loss_C.backward()
        self.opt_C.step()
        stats = {"loss_C": loss_C.item(), "gp": gp.item(), "wdist": (c_real.mean() - c_fake.mean()).item()}
        if generator_step:
            stats.update(self._generator_step(l, y, i, s, use_gap))
        return stats

    def _generator_step(self, l: torch.Tensor, y: torch.Tensor, i: torch.Tensor, s: torch.Tensor,
                        use_gap: bool) -> dict:
        """-E[C(G(i, s))] + lambda_GAP L_GAP with the critic frozen (already updated); EMA update."""
        cfg, G, C = self.cfg, self.G, self.C
        C.requires_grad_(False)
        if cfg.fused:
            loss_adv = wgan_generator_loss(C.from_first_layer(C.first_layer_of_generated(G, y)))
        else:
            loss_adv = wgan_generator_loss(C(y))
        stats = {}
        if use_gap:
            G.gap_stats.update(l[:, -1] - l[:, 0])
            gap, phi = gradient_angle_penalty(gap_distance(l, G.gap_stats), i, s)
            loss_G = loss_adv + cfg.lambda_gap * gap
            stats.update(gap=gap.item(), phi=phi.mean().item())
        else:
            loss_G = loss_adv
        self.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        self.opt_G.step()
        update_ema(self.G_ema, G, warmup_beta(cfg.ema, self.step // cfg.n_critic))
        stats["loss_G"] = loss_G.item()
        return stats

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(self) -> dict:
        """Latent FD of EMA samples vs real windows, loop score and motion magnitude of long samples."""
        from svgen.metrics.latent_fd import LatentFD, real_windows_from_store
        from svgen.metrics.looping import trajectory_stats

        t = self.cfg.model.window
        if self._eval is None:
            real = real_windows_from_store(self.store, t, self.cfg.eval_windows, seed=self.cfg.seed)
            self._eval = LatentFD(real)
        fake = self.G_ema.sample(self.cfg.eval_windows, t, seed=12345).cpu().numpy()
        long = self.G_ema.sample(self.cfg.eval_long_num, self.cfg.eval_long_frames, seed=54321).cpu().numpy()
        traj = trajectory_stats(long, min_lag=t)
        return {"latent_fd": float(self._eval(fake)), "loop": traj["loop_score"],
                "loop_max": traj["loop_score_max"], "motion": traj["motion_magnitude"]}

    def preview(self) -> Path:
        """Render a few EMA samples side by side into ``samples/preview-NNNNNNN.mp4`` (the step)."""
        from svgen.stage1_image_gan.checkpoints import load_checked_generator
        from svgen.stage1_image_gan.render import write_rendered_video

        if not hasattr(self, "_G_img"):
            self._G_img = load_checked_generator(self.cfg.generator, self.generator_sha256, self.device)
        ws = self.G_ema.sample(self.cfg.preview_num, self.cfg.preview_frames, seed=777)
        out = self.run.samples / f"preview-{self.step:07d}.mp4"
        write_rendered_video(self._G_img, ws, out, fps=self.ref["fps"])
        return out

    # -- loop ---------------------------------------------------------------------------------
    def _done(self) -> bool:
        """``steps`` steps done when given, else ``epochs`` epochs."""
        return self.step >= self.cfg.steps if self.cfg.steps is not None else self.epoch >= self.cfg.epochs

    def _snapshot(self, final: bool = False) -> None:
        """Metrics and ``latest.pt``; every ``keep_every`` steps a numbered EMA-only snapshot; the final
        one also renders a preview (when previews are on)."""
        cfg = self.cfg
        metrics = self.evaluate()
        self.run.log_metrics(epoch=self.epoch, step=self.step, **metrics)
        self.run.save_checkpoint(self.state_dict())
        if cfg.keep_every and self.step % cfg.keep_every == 0 and not final:
            light = motion_checkpoint(cfg, self.G, self.G_ema, None, self.pca, self.ref, self.generator_sha256,
                                      meta={"epoch": self.epoch, "step": self.step})
            torch_save_atomic(light, self.run.checkpoints / f"motion-{self.step:07d}.pt")
        if final and cfg.preview_every:
            self.preview()

    def total_steps(self) -> int:
        if self.cfg.steps is not None:
            return self.cfg.steps
        return self.cfg.epochs * self.sampler.batches_per_epoch(self.epoch)   # approximately constant

    def _next_batch(self) -> torch.Tensor:
        """The batch at (epoch, batch_in_epoch), read one ahead on a thread."""
        while True:
            if self._batches is None:
                self._epoch_batches = self.sampler.batches_per_epoch(self.epoch)
                self._batches = prefetch(self.sampler.epoch(self.epoch, skip=self.batch_in_epoch))
            real = next(self._batches, None)
            if real is not None:
                return torch.from_numpy(real).to(self.device)
            self._end_epoch()                                   # an epoch without (further) batches

    def _end_epoch(self) -> None:
        if self._batches is not None:
            self._batches.close()
        self._batches = None
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def _step(self) -> dict:
        """One step of the loop: the next batch through :meth:`train_step` (a generator step every
        ``n_critic``); returns the latest value of every statistic (G's change on generator steps only)."""
        g_step = (self.step + 1) % self.cfg.n_critic == 0
        self._stats.update(self.train_step(self._next_batch(), generator_step=g_step), epoch=self.epoch)
        self.step += 1
        self.batch_in_epoch += 1
        if self.batch_in_epoch == self._epoch_batches:
            self._end_epoch()
        return self._stats

    def train(self) -> Path:
        """Train to the end (resumable at any point) and write ``<out>/motion.pt``."""
        cfg = self.cfg
        self.run.save_config(cfg)
        if self.step == 0:
            self.run.log_metrics(epoch=0, step=0, **self.evaluate())
        self._batches, self._stats = None, {}
        try:
            fit(self.run, self._step, lambda: self.step, self._done, self._snapshot, total=self.total_steps(),
                log_every=cfg.log_every, snapshot_every=cfg.snapshot_every, preview_every=cfg.preview_every,
                preview=self.preview, desc="train-motion (gru)",
                postfix=lambda st: {"epoch": st["epoch"], "C": f"{st['loss_C']:.3g}",
                                    "G": f"{st.get('loss_G', math.nan):.3g}"})
            return self.export()
        finally:
            if self._batches is not None:
                self._batches.close()
            self.run.close()
            self.store.close()

    def calibrate(self) -> MotionCalibration:
        """The EMA generator's spread calibration against the training windows (fixed seed)."""
        cfg = self.cfg
        return calibrate_from_store(lambda n, t, seed: self.G_ema.sample(n, t, seed=seed), self.store, self.pca,
                                    window=cfg.calibration_window, num=32, seed=2468,
                                    max_gain=cfg.calibration_max_gain)

    def export(self) -> Path:
        """``<out>/motion.pt``: EMA generator (used for sampling), G, critic, PCA, the spread calibration
        and provenance."""
        ckpt = motion_checkpoint(self.cfg, self.G, self.G_ema, self.C, self.pca, self.ref, self.generator_sha256,
                                 meta={"epoch": self.epoch, "step": self.step})
        if self.cfg.calibrate:
            cal = self.calibrate()
            ckpt["calibration"] = cal.to_dict()
            ckpt["meta"]["calibration"] = cal.summary()
        out = Path(self.cfg.out) / "motion.pt"
        torch_save_atomic(ckpt, out)
        return out


def check_config(cfg: GRUTrainConfig) -> None:
    """One-line errors for settings the trainer cannot run with."""
    if cfg.penalty_units not in PENALTY_UNITS:
        raise SvgenError(f"penalty_units must be one of {', '.join(PENALTY_UNITS)}, got {cfg.penalty_units!r}")
    if int(cfg.n_critic) < 1:
        raise SvgenError(f"n_critic must be at least 1, got {cfg.n_critic}")
    if int(cfg.calibration_window) < 2:
        raise SvgenError(f"calibration_window must be at least 2 frames, got {cfg.calibration_window}")
    if not cfg.calibration_max_gain >= 1.0:
        raise SvgenError(f"calibration_max_gain must be at least 1, got {cfg.calibration_max_gain}")


def train_gru(cfg: GRUTrainConfig, resume: bool = False) -> Path:
    """Train a GRU motion model as configured; returns the path of ``motion.pt``."""
    if cfg.epochs < 1 and cfg.steps is None:
        raise SvgenError(f"--epochs must be at least 1, got {cfg.epochs}")
    return GRUTrainer(cfg, resume=resume).train()


def projected_hours(windows_per_s: float, frames: int = 15000, epochs: int = 350, window: int = 25,
                    stride: Optional[int] = None) -> float:
    """Wall time of ``epochs`` epochs over a clip of ``frames`` frames at a measured throughput."""
    stride = stride or window
    per_epoch = (frames - window) // stride + 1
    return epochs * per_epoch / windows_per_s / 3600.0 if windows_per_s > 0 else math.inf
