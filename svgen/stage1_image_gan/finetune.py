"""Style transfer by fine-tuning the decoder (StyleInV §4; the few-shot transfer setting of StyleGAN2-ADA).

A copy of a trained generator keeps training as a GAN, now against a small style set (cartoons,
paintings, a colour grade): the synthesis network learns the new look while

- the **mapping network is frozen** (and ``w_avg`` with it), so W is the parent's W: every code of the
  parent -- an inversion, a motion model's trajectory, an edit direction -- renders the same face,
  pose and expression through the copy, in the new style. That is what lets ``svgen animate
  --render-generator`` render the same latents through the restyled decoder;
- optionally the layers of the first ``freeze_coarse`` synthesis blocks (4x4, 8x8, ...: the coarse layers
  that decide pose and face shape) stay as they were, bit for bit (their ToRGB outputs still learn the
  colours, see :func:`frozen_modules`), so only texture and colour can change.

The discriminator starts from the parent checkpoint's D when it has one (it already knows faces; only
its notion of "real" moves), else from a fresh one. ADA (:mod:`~svgen.stage1_image_gan.augment`) is on by
default: a few-shot set is exactly the case it was made for; its controller reacts within ``ada_kimg``
thousand images (10, not stage 1's 500, because a fine-tune is a few thousand images long).

Losses are stage 1's building blocks (:mod:`svgen.nn.losses`): the non-saturating logistic loss and lazy
R1 on D (every ``D_reg_interval`` steps, its own Adam step as in StyleGAN2). No path-length term and no
style mixing: the mapping is frozen and the run is short, and both would double G's cost per step.

Why this module lives in stage 1: it trains stage-1 networks with stage-1 pieces (checkpoint format,
augmentation, image grids) and writes a stage-1 ``generator.pt``; the pipeline only consumes the result
(:mod:`svgen.editing.restyle` checks it is a fine-tune of the right parent).

Files: ``--out G_style.pt`` (the generator checkpoint; its ``meta`` records ``finetuned_from``, the
parent's sha256, and ``frozen``) and the run folder ``G_style.finetune/`` beside it with ``config.json``,
``log.jsonl``, ``metrics.jsonl`` (the style distance at every snapshot), ``checkpoints/latest.pt``
(replaced atomically; ``--resume`` continues from it exactly) and ``samples/`` (fixed-latent grids).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from svgen.metrics.frechet import frechet_distance, gaussian_stats
from svgen.nn.losses import d_logistic_fake, d_logistic_real, g_nonsaturating_loss, r1_penalty
from svgen.preprocessing.dataset import AlignedDataset
from svgen.stage1_image_gan.augment import AdaptiveP, AugmentPipe, augment_config
from svgen.stage1_image_gan.checkpoint_format import FORMAT, make_generator_checkpoint
from svgen.stage1_image_gan.checkpoints import build_networks, checkpoint_preset, read_generator_checkpoint
from svgen.stage1_image_gan.networks import Discriminator, Generator
from svgen.stage1_image_gan.train import GlobalBatches, _to_cpu, generate_images, save_image_grid
from svgen.training import (Run, check_run_folder, from_invocation, half_life_beta, lazy_regularised_adam,
                            optimizer_step, resumed_config, saved_config, update_ema)
from svgen.utils.config import config_to_dict
from svgen.utils.device import select_device
from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.io import file_sha256, refuse_input_as_output, require_file, torch_save_atomic
from svgen.utils.progress import progress
from svgen.utils.rundir import load_checkpoint
from svgen.utils.seed import get_rng_state, seed_everything, set_rng_state

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
DEFAULT_STEPS = 1000


@dataclass
class FinetuneConfig:
    """Everything a decoder fine-tune depends on (``config.json`` and every checkpoint)."""

    generator: str = from_invocation("")   # the parent generator (svgen .pt, NVIDIA .pkl, rosinality .pt)
    data: str = from_invocation("")        # style set: an image zip (aligned.zip, dataset_tool) or a folder
    out: str = from_invocation("")         # G_style.pt (the run folder is <stem>.finetune beside it)
    steps: Optional[int] = from_invocation(None, if_given=True)   # length in optimiser steps, or
    kimg: Optional[float] = from_invocation(None, if_given=True)  # in thousands of style images shown
    freeze_coarse: int = 0                 # synthesis blocks whose layers stay frozen, from 4x4 up (not ToRGB)
    batch: Optional[int] = None            # None: the parent preset's batch
    ada: bool = True
    ada_target: float = 0.6
    ada_kimg: float = 10.0                 # thousand images for p to move by 1
    lr: Optional[float] = None             # None: the parent preset's lr_G / lr_D
    r1_gamma: Optional[float] = None       # None: the parent preset's
    ema_kimg: float = 0.5                  # G EMA half-life, at most ema_rampup x the images seen so far
    ema_rampup: float = 0.2
    snap_steps: int = from_invocation(250)
    grid_size: int = 16
    style_images: int = 128                # images per side for the style distance (0: off)
    seed: int = 0
    device: str = from_invocation("auto")
    log_every: int = from_invocation(20)
    resume: bool = from_invocation(False)


def run_folder(out: PathLike) -> Path:
    """The run folder of ``--out G_style.pt``: ``G_style.finetune/`` beside it."""
    out = Path(out)
    return out.with_name(out.stem + ".finetune")


# -- the style set ------------------------------------------------------------------------------

class StyleImages(torch.utils.data.Dataset):
    """Style images as uint8 [3, R, R] at the generator's resolution ``R``: an image zip (``aligned.zip`` or
    a dataset_tool zip, read by stage 1's :class:`AlignedDataset`) or a folder of images (not recursive).
    Non-square images are centre-cropped, other sizes resized (Lanczos)."""

    def __init__(self, path: PathLike, resolution: int):
        self.path = Path(path)
        self.resolution = int(resolution)
        self.zip: Optional[AlignedDataset] = None
        self.files: list[Path] = []
        if self.path.is_dir():
            self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXT and p.is_file())
            if not self.files:
                raise SvgenError(f"folder holds no images ({', '.join(IMAGE_EXT)})", self.path)
        else:
            self.zip = AlignedDataset(self.path)

    def __len__(self) -> int:
        return len(self.zip) if self.zip is not None else len(self.files)

    def _read(self, i: int) -> np.ndarray:
        if self.zip is not None:
            return self.zip[i]
        try:
            with Image.open(self.files[i]) as img:
                return np.asarray(img.convert("RGB"))
        except OSError as exc:
            raise SvgenError(f"cannot read image ({exc})", self.files[i]) from None

    def __getitem__(self, i: int) -> torch.Tensor:
        img = self._read(i)
        h, w = img.shape[:2]
        if h != w:
            s = min(h, w)
            img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        if img.shape[0] != self.resolution:
            img = np.asarray(Image.fromarray(img).resize((self.resolution,) * 2, Image.LANCZOS))
        return torch.from_numpy(np.array(img)).permute(2, 0, 1)   # a writable copy

    def fingerprint(self) -> str:
        """Identifies the style set a run was started on (zip: its directory; folder: names and bytes)."""
        if self.zip is not None:
            return self.zip.fingerprint()
        h = hashlib.sha256()
        for p in self.files:
            h.update(f"{p.name}\0{file_sha256(p)}\n".encode())
        return h.hexdigest()

    def reference(self, num: int) -> torch.Tensor:
        """``num`` images spread evenly over the set, uint8 [num, 3, R, R]."""
        idx = np.linspace(0, len(self) - 1, num=min(num, len(self))).round().astype(int)
        return torch.stack([self[int(i)] for i in idx])


def style_distance(a: torch.Tensor, b: torch.Tensor, size: int = 8) -> float:
    """Fréchet distance between two uint8 image sets [N, 3, R, R] on a fixed, download-free feature: the
    images area-averaged to ``size`` x ``size`` RGB (colour, tone and coarse layout), in [0, 1] units."""
    def feat(x: torch.Tensor) -> np.ndarray:
        return F.adaptive_avg_pool2d(x.float() / 255, size).flatten(1).numpy()

    mu1, s1 = gaussian_stats(feat(a))
    mu2, s2 = gaussian_stats(feat(b))
    return frechet_distance(mu1, s1, mu2, s2, method="svd")


# -- the networks -------------------------------------------------------------------------------

def frozen_modules(G: Generator, freeze_coarse: int) -> list[str]:
    """Names of the frozen parts: the mapping network and the layers of the first ``freeze_coarse`` synthesis
    blocks (their constant and convolutions: pose and face shape). Their ToRGB layers keep training: in the
    skip architecture the coarse ToRGB outputs are the low-frequency colour of the whole image, so freezing
    them would pin the parent's colours (a sepia fine-tune of the tiny 32 px generator with them frozen
    moved away from the style: distance 4.4 -> 5.4 in 400 steps)."""
    blocks = G.synthesis.blocks()
    if not 0 <= freeze_coarse < len(blocks):
        res = G.synthesis.block_resolutions
        raise SvgenError(f"--freeze-coarse must be in 0..{len(blocks) - 1} (the generator has {len(blocks)} "
                         f"synthesis blocks, {res[0]} to {res[-1]} px), got {freeze_coarse}")
    names = ["mapping"]
    for res, block in zip(G.synthesis.block_resolutions, blocks[:freeze_coarse]):
        names += [f"synthesis.b{res}.{n}" for n, _ in block.named_parameters(recurse=False)]
        names += [f"synthesis.b{res}.{n}" for n, _ in block.named_children() if n != "torgb"]
    return names


def trainable_parameters(G: Generator, frozen: list[str]) -> list[torch.nn.Parameter]:
    """Set ``requires_grad`` on G: off for ``frozen`` modules, on for the rest; returns the trainable ones."""
    out = []
    for name, p in G.named_parameters():
        train = not any(name == f or name.startswith(f + ".") for f in frozen)
        p.requires_grad_(train)
        if train:
            out.append(p)
    return out


# -- the trainer --------------------------------------------------------------------------------

class DecoderFinetuner:
    """One fine-tuning run: parent networks, style stream, optimisers, ADA, and :meth:`train_step`."""

    def __init__(self, cfg: FinetuneConfig):
        parent = require_file(cfg.generator, "generator")
        out = Path(cfg.out)
        if out.suffix.lower() != ".pt":
            raise SvgenError("output must be a .pt file", out)
        refuse_input_as_output(out, {"--generator": parent, "--data": cfg.data})
        if out.exists() and not cfg.resume:
            raise SvgenError("output already exists; choose another --out (or --resume its run)", out)
        latest = check_run_folder(run_folder(out), cfg.resume)
        state = load_checkpoint(latest, expect_format=FORMAT) if cfg.resume else None
        if state is not None:
            given = cfg
            cfg = resumed_config(saved_config(FinetuneConfig, state["finetune_config"]),
                                 dataclasses.replace(cfg, resume=True))
            if given.kimg is not None and given.steps is None:     # a new length given in kimg
                cfg = dataclasses.replace(cfg, steps=None)
        self.parent_sha256 = file_sha256(parent)
        if state is not None and state["meta"]["finetuned_from"] != self.parent_sha256:
            raise SvgenError("cannot resume: the run fine-tunes another generator (it records "
                             f"{state['meta']['finetuned_from'][:12]}, this one is {self.parent_sha256[:12]})", parent)

        ckpt = read_generator_checkpoint(parent)
        self.preset = preset = checkpoint_preset(ckpt)
        _, parent_G, parent_D = build_networks(ckpt, parent)
        res = preset.G.img_resolution
        self.data = StyleImages(cfg.data, res)
        self.fingerprint = self.data.fingerprint()
        if state is not None and state["meta"]["style_fingerprint"] != self.fingerprint:
            raise SvgenError("cannot resume: the run was started on another style set", cfg.data)

        batch = int(cfg.batch or preset.batch)
        group = min(preset.D.mbstd_group_size, batch)
        if group > 0 and batch % group:
            raise SvgenError(f"--batch {batch} is not a multiple of the discriminator's minibatch-std group {group}")
        if cfg.steps is None:
            steps = math.ceil(cfg.kimg * 1000 / batch) if cfg.kimg is not None else DEFAULT_STEPS
            cfg = dataclasses.replace(cfg, steps=steps)
        if cfg.steps <= 0:
            raise SvgenError(f"the run must be at least one step long, got {cfg.steps}")
        self.cfg, self.batch = cfg, batch
        self.device = device = select_device(cfg.device)

        # Everything is checked: open the run folder. G starts from the parent's EMA weights (the
        # network its latents belong to).
        self.frozen = frozen_modules(parent_G, cfg.freeze_coarse)
        self.run = Run(run_folder(out), cfg.resume)
        seed_everything(cfg.seed)
        self.G = parent_G.to(device).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.params_G = trainable_parameters(self.G, self.frozen)
        self.D_source = "parent" if parent_D is not None else "fresh"
        self.D = (parent_D if parent_D is not None else Discriminator(preset.D)).to(device).train()
        lr = cfg.lr or preset.lr_G
        self.opt_G = lazy_regularised_adam(self.params_G, lr, preset.betas, 0)
        self.opt_D = lazy_regularised_adam(self.D.parameters(), cfg.lr or preset.lr_D, preset.betas,
                                           preset.D_reg_interval)
        self.r1_gamma = preset.r1_gamma if cfg.r1_gamma is None else float(cfg.r1_gamma)
        self.augment_pipe = AugmentPipe(augment_config(preset.augpipe), p=0.0).to(device) if cfg.ada else None
        self.ada = AdaptiveP(self.augment_pipe, batch, cfg.ada_target, 4, cfg.ada_kimg) if cfg.ada else None

        self.step = 0
        if state is not None:
            self._load_state(state)
        rng = state.get("rng") if state is not None else None
        seed_everything(cfg.seed + 1)
        if rng is not None:
            set_rng_state(rng)
        sampler = GlobalBatches(len(self.data), batch, 0, 1, cfg.seed, start=self.step)
        self.reals = iter(torch.utils.data.DataLoader(self.data, batch_sampler=sampler, num_workers=0,
                                                      generator=torch.Generator().manual_seed(cfg.seed)))
        self.reference = self.data.reference(cfg.style_images) if cfg.style_images else None

    def _load_state(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.D.load_state_dict(state["D"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        if self.ada is not None and state.get("ada"):
            self.ada.load_state_dict(state["ada"])
        self.step = int(state["step"])

    def run_D(self, img: torch.Tensor) -> torch.Tensor:
        """Augment (ADA, when on and p > 0) then discriminate."""
        if self.augment_pipe is not None and float(self.augment_pipe.p) > 0:
            img = self.augment_pipe(img)
        return self.D(img, None)

    def train_step(self, real_u8: torch.Tensor) -> dict:
        """One G step, one D step (+ lazy R1 every ``D_reg_interval`` steps), the EMA and ADA's p."""
        real = real_u8.to(self.device).float() / 127.5 - 1
        n = real.shape[0]
        with torch.no_grad():                         # the frozen mapping: W is the parent's W
            ws = self.G.mapping(torch.randn(2 * n, self.G.z_dim, device=self.device), None)
        ws_G, ws_D = ws.split(n)

        self.D.requires_grad_(False)
        fake_logits = self.run_D(self.G.synthesis(ws_G, noise_mode="random"))
        loss_G = g_nonsaturating_loss(fake_logits).mean()
        optimizer_step(self.opt_G, self.params_G, loss_G)

        self.D.requires_grad_(True)
        with torch.no_grad():
            fake = self.G.synthesis(ws_D, noise_mode="random")
        real_logits = self.run_D(real)
        loss_D = d_logistic_fake(self.run_D(fake)).mean() + d_logistic_real(real_logits).mean()
        optimizer_step(self.opt_D, self.D.parameters(), loss_D)
        stats = {"loss_G": float(loss_G.detach()), "loss_D": float(loss_D.detach()),
                 "real_score": float(real_logits.detach().mean())}
        interval = self.preset.D_reg_interval
        if self.r1_gamma > 0 and self.step % interval == 0:
            real_in = real.detach().requires_grad_(True)
            r1 = r1_penalty(self.run_D(real_in), real_in)
            optimizer_step(self.opt_D, self.D.parameters(), r1.mean() * (self.r1_gamma / 2) * interval)
            stats["r1"] = float(r1.detach().mean())

        update_ema(self.G_ema, self.G, half_life_beta(self.batch, self.step * self.batch, self.cfg.ema_kimg,
                                                       self.cfg.ema_rampup))
        if self.ada is not None:
            self.ada.accumulate(real_logits)
            self.ada.step(self.step)
        self.step += 1
        return stats

    # -- snapshots and export ---------------------------------------------------------------------
    def meta(self) -> dict:
        cfg = self.cfg
        return {"finetuned_from": self.parent_sha256, "parent_generator": str(Path(cfg.generator).resolve()),
                "frozen": self.frozen, "freeze_coarse": cfg.freeze_coarse, "style_data": str(Path(cfg.data).resolve()),
                "style_fingerprint": self.fingerprint, "style_images": len(self.data), "step": self.step,
                "kimg": self.step * self.batch / 1000, "batch": self.batch, "discriminator": self.D_source,
                "ada_p": float(self.augment_pipe.p) if self.augment_pipe is not None else 0.0}

    def checkpoint(self) -> dict:
        """The generator checkpoint of the current weights (what ``G_style.pt`` holds)."""
        return make_generator_checkpoint(self.preset, self.G, self.G_ema, self.D, meta=self.meta())

    def snapshot(self) -> None:
        """``latest.pt`` (with the training state), a fixed-latent sample grid and the style distance."""
        state = self.checkpoint()
        state.update(_to_cpu({"finetune_config": config_to_dict(self.cfg), "opt_G": self.opt_G.state_dict(),
                              "opt_D": self.opt_D.state_dict(), "step": self.step, "rng": get_rng_state(),
                              "ada": self.ada.state_dict() if self.ada is not None else None}))
        self.run.save_checkpoint(state)
        grid = generate_images(self.G_ema, self.cfg.grid_size, self.cfg.seed, self.device)
        save_image_grid(grid, self.run.samples / f"fakes{self.step:06d}.png")
        if self.reference is not None:
            fakes = generate_images(self.G_ema, len(self.reference), self.cfg.seed + 1, self.device)
            self.run.log_metrics(step=self.step, style_fd=style_distance(fakes, self.reference),
                                 num_images=len(self.reference))

    def train(self) -> Path:
        """Run to ``cfg.steps`` and write ``cfg.out`` atomically; returns its path."""
        cfg, run = self.cfg, self.run
        run.save_config(cfg)
        resumed = self.step > 0
        run.log_step(event="resume" if resumed else "start", step=self.step, parent=self.parent_sha256,
                     frozen=self.frozen, discriminator=self.D_source, style_images=len(self.data))
        if not resumed:
            save_image_grid(self.data.reference(cfg.grid_size), run.samples / "style.png")
            self.snapshot()                           # step 0: the parent's samples and distance
        bar = progress(total=cfg.steps, initial=min(self.step, cfg.steps), unit="step", desc="finetune-decoder")
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        while self.step < cfg.steps:
            for k, v in self.train_step(next(self.reals)).items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
            bar.update(1)
            done = self.step >= cfg.steps
            if self.step % cfg.log_every == 0 or done:
                rec = {k: v / counts[k] for k, v in sums.items()}
                p = float(self.augment_pipe.p) if self.augment_pipe is not None else 0.0
                run.log_step(step=self.step, kimg=self.step * self.batch / 1000, ada_p=p, **rec)
                bar.set_postfix(G=f"{rec.get('loss_G', 0):.3f}", D=f"{rec.get('loss_D', 0):.3f}", p=f"{p:.3f}")
                sums.clear()
                counts.clear()
            if self.step % cfg.snap_steps == 0 or done:
                self.snapshot()
        bar.close()
        torch_save_atomic(_to_cpu(self.checkpoint()), cfg.out)
        run.close()
        return Path(cfg.out)


def finetune_decoder(cfg: FinetuneConfig) -> Path:
    """Fine-tune (or resume) and return the path of ``cfg.out``; the caller's RNG state is restored."""
    caller_rng = get_rng_state()
    try:
        return DecoderFinetuner(cfg).train()
    finally:
        set_rng_state(caller_rng)
