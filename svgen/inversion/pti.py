"""Pivotal tuning (PTI, Roich et al. 2021): make the frozen generator render a new person exactly.

An encoder can only reach faces the generator already makes; a generator trained on one actor makes
only that actor. PTI keeps the inverted code as a *pivot* ``w_p`` and fine-tunes a copy of the
synthesis network so that ``G_t(w_p)`` reproduces the photo:

    L = L_img(G_t(w_p), x) + lambda_loc * [ l2(G_t(w_r), G(w_r)) + msssim(G_t(w_r), G(w_r)) ]

- ``L_img`` is the reconstruction loss of the encoder (pixel L2 + MS-SSIM; LPIPS and the identity
  loss when the given loss has them; ``PTIConfig.identity`` builds one otherwise: dlib's
  face-recognition ResNet with ``"dlib"``, off by default, see ``PTIConfig``).
- The locality regulariser (PTI §3.3): ``w_r = w_p + alpha * (w_z - w_p) / ||w_z - w_p||`` is a step
  of fixed length from the pivot toward a random mapped code ``w_z`` (truncation 0.5); the tuned
  and the original generator must agree there, so the rest of the latent space -- and with it what
  the motion model's effect -- stays as it was. ``alpha`` is given in units of the mapping network's
  mean distance to ``w_avg`` (PTI's 30 for FFHQ's W is about one such unit). We use 6 units: the
  regulariser must hold the space *beyond* the motion, not inside it. A transferred trajectory moves
  up to about 12 (flattened W+) from the pivot on the demo, where one unit is 9.4; at alpha 1 the
  tuned generator was pulled back to the training actor inside the motion's range and the face
  faded in 9 of 16 frames of the GRU animation (identity 0.528); at 3: 16/16 frames, 0.497. From 3
  to 6 units (dlib distance of 16 frames of the demo's GRU trajectory moved onto each photo, to the
  64 px photo): demo photo 0.497 -> 0.439 (StyleInV 0.291 -> 0.275), two held-out photos
  0.507 -> 0.471 and 0.389 -> 0.315; at 12 units the demo photo went back to 0.537.
- The motion term (``PTIConfig.motion`` > 0, ``svgen animate --tune-motion``; on there by default): the
  locality regulariser makes the tuned generator agree with the original *beyond* the motion; inside
  it, at ``w_p + delta`` for the offsets ``delta`` the animation will apply, nothing ties the tuned
  generator to the photo, and the training actor's appearance comes back in some frames (a ghost,
  flicker of skin tone). The term asks the tuned generator to change under each offset as the
  original does on its average face ``w_anchor`` (``w_avg``):
  ``l2 + msssim(G_t(w_p + delta), sg(G_t(w_p)) + G(w_anchor + delta) - G(w_anchor))``, ``motion_batch``
  offsets a step. Measured on the demo folder (64 px; the demo photo, 000031.jpg, jackson.jpg; 2 motions
  of 150 frames, 15 frames each checked): dlib identity of the frames to the photo 0.38/0.38/0.37 ->
  0.35/0.39/0.30 with the GRU's motion and 0.42/0.51/0.47 -> 0.34/0.33/0.31 with a StyleInV trained
  on a W store; every frame keeps a face either way, and the actor's look no longer flickers through
  (looked at, 4x enlarged). The mouth spread falls to what the motion makes on the average face:
  on the demo photo 0.6-0.7x of the clip's -> about 0.2x, most of it that flicker moving dlib's mouth
  points; on the held-out photos 0.3-0.4x either way.
  The original's change is asked for only inside the face (``motion_face_only``: a soft ellipse of the
  aligned crop, :func:`face_ellipse`); outside it the tuned generator must not change. On the average
  face the offsets also move the training actor's hair outline, and the tuned generator drew that as a
  ring around a bald head (jackson.jpg, looked at 3x enlarged). Kept to the face (demo GRU, one
  150-frame motion, default layers; demo photo, 000031.jpg, jackson.jpg): the ring is gone (streaks on
  the cheeks, inside the face, stay), dlib identity 0.35/0.43/0.32 -> 0.29/0.40/0.34, every frame a
  face, mouth 0.15/0.49/0.18x -> 0.25/0.29/0.27x (one motion's mouth varies by about +-0.1).
  With the mouth term on, the motion term leaves the mouth region out (``motion_mouth_free``,
  :func:`mouth_ellipse`): on the average face the offsets barely open the mouth, and the two terms pulled
  the tuned mouth in opposite directions. Measured (demo generator, a GRU trained 6000 steps whose samples
  move the mouth 0.65x of the clip's; 3 motions of 150 frames; demo photo / 000031.jpg / jackson.jpg):
  mouth term alone: mouth 0.72 / 0.81 / 0.63x, a face in 71 / 88 / 87 % of the frames (the faces lost
  are the photo dissolving into the training actor away from the pivot, looked at); adding the motion
  term over the whole face (demo photo only): a face in every frame, mouth 0.35x (0.47x with the mouth
  term at weight 3, 0.50x with the motion term at 0.3); motion term with the mouth left out and the
  mouth term at 3 (animate's defaults): mouth 0.71 / 0.72 / 0.59x, a face in every frame, dlib identity
  0.39 / 0.44 / 0.34 (mouth term alone: 0.46 / 0.49 / 0.40).
- The mouth term (``PTIConfig.mouth`` > 0, ``svgen animate --tune-mouth``, on by default there): the
  tuned generator must render the photo with its own mouth opened (or closed) at offsets along the
  direction in which the original generator opens the mouth in the motion's codes:
  ``l2 + msssim(G_t(w_p + offset_k), target_k) + mouth_focus * l2_mouth(...)`` over all four targets each
  step (``mouth_batch``). Without it the tuned generator draws the photo's (mostly closed) mouth all around
  the pivot. See :mod:`svgen.inversion.mouth`. ``l2_mouth`` is the squared error averaged over the mouth
  ellipse (:func:`mouth_ellipse`) alone: the targets differ from the photo by an opening of 1-2 pixels at
  64 px, a few dozen of the crop's 4096, so in the whole-image loss the tuned generator lost little by
  drawing a blurred, closed mouth at the offsets (a greyscale portrait's tuned mouth even closed as the
  codes moved to open it: MAR slope -0.42x of the store's). Measured (demo folder of 27c9444, 250-frame
  animations, 2 motions each, PTI seeds 0 and 1; GRU; 000031.jpg / 015259.jpg / jackson.jpg / greyscale
  downey), mouth spread x the clip's: 2 of 4 targets a step, no focus 0.73-0.76 / 0.84-1.27 / 0.50-0.73 /
  0.41-0.99 (single motions down to 0.41); focus 1 0.66 / 1.29-1.39 / 0.83-0.95 / 0.73-0.86; with all
  four targets a step as well jackson 0.84, downey 0.66; StyleInV on downey 0.46 -> 0.66. A face in every
  frame of the GRU animations throughout; dlib identity 0.22-0.36 either way.
- Only the synthesis network is tuned (the pivot is fixed, the mapping network is unused).
  Adam, 350 steps, batch 1, constant noise (PTI's settings); training stops early once the
  reconstruction reaches ``stop_psnr``. The learning rate is PTI's 3e-4 for the published networks
  (>= 256 channels); narrow networks (our ``tiny`` preset, <= 64 channels) have far fewer weights to
  move and need 3e-3 (measured on an unseen photo at 32 px, 350 steps: 3e-4 -> 20.4 dB, 1e-3 -> 23.8 dB,
  3e-3 -> 26.1 dB); :func:`default_lr` picks by width unless ``lr`` is given.

The tuned synthesis weights are cached by a key of photo, pivot, generator and settings
(:func:`cache_key`), so animating the same photo again, or with another motion, costs nothing.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from svgen.inversion.losses import ReconstructionLoss, ms_ssim, pixel_l2
from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.io import torch_save_atomic

CACHE_FORMAT = "svgen-pti"


@dataclass
class PTIConfig:
    """Settings of one pivotal tuning run (PTI's published values unless noted)."""

    steps: int = 350
    lr: Optional[float] = None     # None: default_lr(G) (PTI's 3e-4 for the published widths)
    l2: float = 1.0
    msssim: float = 0.5            # stands in for PTI's LPIPS when no LPIPS weights are given
    id: float = 0.1                # identity loss weight (when the loss has an identity net)
    identity: str = "none"         # identity net of the default loss (build_identity_loss kinds)
    locality: float = 0.1          # weight of each locality term (PTI: 0.1 L2 + 0.1 LPIPS)
    locality_alpha: float = 6.0    # step length from the pivot, in mapped-code distances to w_avg
    locality_psi: float = 0.5      # truncation of the random codes w_z
    locality_every: int = 1
    motion: float = 0.0            # weight of the motion term (0: off; see the module doc)
    motion_batch: int = 2          # motion offsets per step
    motion_face_only: bool = True  # the original's change inside the face ellipse, none outside it
    mouth: float = 0.0             # weight of the mouth term (0: off; svgen.inversion.mouth)
    mouth_batch: int = 4           # mouth targets per step (4: all of them, the term draws nothing)
    mouth_focus: float = 1.0       # weight of the mouth term's own error inside the mouth ellipse (module doc)
    motion_mouth_free: bool = True  # with the mouth term on, the motion term leaves the mouth to it
    stop_psnr: float = 40.0        # stop once G_t(w_p) reconstructs the photo to this PSNR (dB)
    seed: int = 0


PAPER_LR = 3e-4
NARROW_LR = 3e-3
NARROW_CHANNELS = 128


def default_lr(G: nn.Module) -> float:
    """PTI's learning rate for ``G``: 3e-4 (the paper) unless the network is narrow (see module doc)."""
    widest = max(int(c) for c in G.synthesis.channels.values())
    return NARROW_LR if widest <= NARROW_CHANNELS else PAPER_LR


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image of images in [-1, 1] (peak-to-peak 2)."""
    mse = pixel_l2(x.clamp(-1, 1), y.clamp(-1, 1)).clamp_min(1e-12)
    return 10 * torch.log10(4.0 / mse)


def pivotal_tuning(G: nn.Module, pivot: torch.Tensor, target: torch.Tensor, cfg: PTIConfig,
                   loss: Optional[ReconstructionLoss] = None,
                   on_step: Optional[Callable[[int, dict], None]] = None,
                   motion_offsets: Optional[torch.Tensor] = None,
                   mouth: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> tuple[nn.Module, dict]:
    """Tune a copy of ``G`` so that it renders ``target`` at ``pivot``; ``G`` itself is unchanged.

    pivot: [num_ws, w_dim] (or [1, num_ws, w_dim]); target: [1, 3, R, R] in [-1, 1] at G's resolution;
    motion_offsets: [N, num_ws, w_dim] the animation adds to the pivot (needed when ``cfg.motion`` > 0);
    mouth: (offsets [K, num_ws, w_dim], targets [K, 3, R, R]) of the mouth term (``cfg.mouth`` > 0;
    :func:`svgen.inversion.mouth.mouth_targets`): ``G_t(pivot + offset_k)`` must render ``target_k``.
    Returns (the tuned generator in eval mode, a summary with the PSNR before and after).
    """
    device = G.mapping.w_avg.device
    pivot = pivot.reshape(1, G.num_ws, G.w_dim).detach().float().to(device)
    target = target.detach().float().to(device)
    if target.shape[-1] != G.img_resolution:
        raise ValueError(f"target must be {G.img_resolution} px, got {tuple(target.shape)}")
    loss = loss if loss is not None else ReconstructionLoss(identity=cfg.identity, device=device)
    loss.set_weights(l2=cfg.l2, msssim=cfg.msssim, lpips=0.8, id=cfg.id)
    G_t = copy.deepcopy(G).to(device)
    G_t.requires_grad_(False)
    G_t.synthesis.requires_grad_(True)
    G_t.synthesis.train()
    lr = float(cfg.lr) if cfg.lr is not None else default_lr(G)
    opt = torch.optim.Adam(G_t.synthesis.parameters(), lr=lr, betas=(0.9, 0.999))
    gen = torch.Generator().manual_seed(cfg.seed)
    alpha = cfg.locality_alpha * _mapped_distance(G, device)
    motion = None
    _check_motion_offsets(cfg, motion_offsets)
    if cfg.motion > 0:
        free_mouth = bool(cfg.motion_mouth_free and cfg.mouth > 0)
        motion = _MotionTerm(G, motion_offsets.to(device), cfg.motion_batch, cfg.seed, cfg.motion_face_only,
                             free_mouth=free_mouth)
    mouth_term = None
    if cfg.mouth > 0:
        if mouth is None or len(mouth[0]) == 0:
            raise ValueError("the mouth term (cfg.mouth > 0) needs mouth offsets and targets")
        mouth_term = _MouthTerm(mouth[0].to(device), mouth[1].to(device), cfg.mouth_batch, cfg.seed,
                                focus=cfg.mouth_focus)
    with torch.no_grad():
        psnr_before = float(psnr(G.synthesis(pivot, noise_mode="const"), target))
    step, logs = 0, {}
    for step in range(1, cfg.steps + 1):
        # the two terms are back-propagated one after the other (their gradients add up in .grad), so
        # only one synthesis graph is held at a time: at 256 px on CPU each is ~0.6 GB
        opt.zero_grad(set_to_none=True)
        img = G_t.synthesis(pivot, noise_mode="const")
        img_loss, logs = loss(img, target)
        img_loss.mean().backward()
        if cfg.locality > 0 and step % cfg.locality_every == 0:
            w_r = _locality_code(G, pivot, alpha, cfg.locality_psi, gen)
            with torch.no_grad():
                ref = G.synthesis(w_r, noise_mode="const")
            out = G_t.synthesis(w_r, noise_mode="const")
            loc = pixel_l2(out, ref).mean() + (1 - ms_ssim(out, ref)).mean()
            (cfg.locality * loc).backward()
            logs["locality"] = float(loc.detach())
        if motion is not None:
            mot = motion.loss(G_t, pivot, img.detach())
            (cfg.motion * mot).backward()
            logs["motion"] = float(mot.detach())
        if mouth_term is not None:
            mou = mouth_term.loss(G_t, pivot)
            (cfg.mouth * mou).backward()
            logs["mouth"] = float(mou.detach())
        opt.step()
        logs["psnr"] = float(psnr(img.detach(), target))
        if on_step is not None:
            on_step(step, logs)
        if cfg.stop_psnr and logs["psnr"] >= cfg.stop_psnr:
            break
    G_t.synthesis.requires_grad_(False)
    G_t.eval()
    with torch.no_grad():
        psnr_after = float(psnr(G_t.synthesis(pivot, noise_mode="const"), target))
    return G_t, {"steps": step, "psnr_before": psnr_before, "psnr_after": psnr_after,
                 "motion_offsets": 0 if motion is None else int(len(motion.offsets)),
                 "mouth_targets": 0 if mouth_term is None else int(len(mouth_term.offsets)),
                 "config": {**asdict(cfg), "lr": lr}}


def _check_motion_offsets(cfg: PTIConfig, motion_offsets: Optional[torch.Tensor]) -> None:
    """The motion term (``cfg.motion`` > 0) needs the animation's offsets."""
    if cfg.motion > 0 and (motion_offsets is None or len(motion_offsets) == 0):
        raise ValueError("the motion term (cfg.motion > 0) needs motion_offsets")


class _MotionTerm:
    """The motion term of :func:`pivotal_tuning`: the tuned generator's change under a motion offset
    must be the original generator's change under it on the average face (``w_avg`` in every layer),
    inside the face only when ``face_only`` (no change outside it). With ``free_mouth`` the mouth region
    (:func:`mouth_ellipse`) is left out of the term: the mouth term says what the mouth does there."""

    def __init__(self, G: nn.Module, offsets: torch.Tensor, batch: int, seed: int, face_only: bool = True,
                 free_mouth: bool = False):
        self.G = G
        self.offsets = offsets.reshape(-1, G.num_ws, G.w_dim).float()        # [N, num_ws, w_dim]
        self.anchor = G.mapping.w_avg.reshape(1, 1, -1).expand(1, G.num_ws, -1)
        with torch.no_grad():
            self.anchor_img = G.synthesis(self.anchor, noise_mode="const")   # [1, 3, R, R]
        self.batch = max(1, int(batch))
        self.gen = torch.Generator().manual_seed(int(seed) + 1)
        self.mask = face_ellipse(G.img_resolution).to(self.anchor_img.device) if face_only else None  # [R, R]
        self.keep = ((1.0 - mouth_ellipse(G.img_resolution)).to(self.anchor_img.device)
                     if free_mouth else None)                                 # [R, R] loss weight

    def loss(self, G_t: nn.Module, pivot: torch.Tensor, pivot_img: torch.Tensor) -> torch.Tensor:
        idx = torch.randint(len(self.offsets), (self.batch,), generator=self.gen)
        delta = self.offsets[idx.to(self.offsets.device)]                    # [b, num_ws, w_dim]
        with torch.no_grad():   # recomputed each step: memory does not grow with the number of offsets
            change = self.G.synthesis(self.anchor + delta, noise_mode="const") - self.anchor_img
            if self.mask is not None:
                change = change * self.mask
        out = G_t.synthesis(pivot + delta, noise_mode="const")
        want = pivot_img + change
        if self.keep is not None:             # both sides zeroed in the mouth: no say there
            out, want = out * self.keep, want * self.keep
        return pixel_l2(out, want).mean() + (1 - ms_ssim(out, want)).mean()


class _MouthTerm:
    """The mouth term of :func:`pivotal_tuning`: at ``pivot + offsets[k]`` the tuned generator must render
    ``targets[k]`` (the photo with its mouth opened or closed, :mod:`svgen.inversion.mouth`); ``focus``
    weighs the error inside the mouth ellipse once more, as a mean over that region alone."""

    def __init__(self, offsets: torch.Tensor, targets: torch.Tensor, batch: int, seed: int, focus: float = 0.0):
        if len(offsets) != len(targets):
            raise ValueError(f"{len(offsets)} mouth offsets but {len(targets)} targets")
        self.offsets, self.targets = offsets.float(), targets.float()
        self.batch = max(1, min(int(batch), len(offsets)))
        self.gen = torch.Generator().manual_seed(int(seed) + 2)
        self.focus = float(focus)
        self.region = mouth_ellipse(targets.shape[-1]).to(targets.device)      # [R, R]

    def loss(self, G_t: nn.Module, pivot: torch.Tensor) -> torch.Tensor:
        idx = torch.randperm(len(self.offsets), generator=self.gen)[:self.batch].to(self.offsets.device)
        out = G_t.synthesis(pivot + self.offsets[idx], noise_mode="const")
        want = self.targets[idx]
        loss = pixel_l2(out, want).mean() + (1 - ms_ssim(out, want)).mean()
        if self.focus > 0:   # the opening is a few pixels: its error as the mean over the mouth region alone
            err = (out - want).square().mean(1) * self.region                 # [b, R, R]
            loss = loss + self.focus * (err.sum((1, 2)) / self.region.sum()).mean()
        return loss


def face_ellipse(resolution: int, edge: float = 0.15) -> torch.Tensor:
    """Where the face is in an FFHQ-style aligned crop: 1 inside an ellipse from the brows to the chin
    (centre (0.5, 0.56) of the crop, half-axes 0.30 x 0.36), 0 outside, a linear ramp of ``edge`` of the
    radius between; [R, R]. Fixed, because the crop itself puts the eyes and mouth at fixed places."""
    return _soft_ellipse(resolution, (0.5, 0.56), (0.30, 0.36), edge)


def mouth_ellipse(resolution: int, edge: float = 0.3) -> torch.Tensor:
    """Where the mouth and the chin below it move in an FFHQ-style aligned crop: 1 inside an ellipse
    centred at (0.5, 0.76) of the crop with half-axes 0.17 x 0.10, 0 outside, a linear ramp of ``edge``
    of the radius between; [R, R]. dlib's mouth points of three aligned photos (the demo photo,
    000031.jpg, jackson.jpg) lie within x 0.36-0.64, y 0.68-0.80, their centres at y 0.72-0.74; the
    ellipse reaches lower for the jaw of an opened mouth."""
    return _soft_ellipse(resolution, (0.5, 0.76), (0.17, 0.10), edge)


def _soft_ellipse(resolution: int, centre: tuple[float, float], axes: tuple[float, float], edge: float) -> torch.Tensor:
    """[R, R]: 1 inside the ellipse (centre (x, y) and half-axes in crop units), 0 outside, a linear ramp of
    ``edge`` of the radius across its border."""
    t = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution
    y, x = torch.meshgrid(t, t, indexing="ij")
    r = torch.sqrt(((x - centre[0]) / axes[0]) ** 2 + ((y - centre[1]) / axes[1]) ** 2)
    return ((1.0 - r) / edge + 0.5).clamp(0.0, 1.0)


@torch.no_grad()
def _mapped_distance(G: nn.Module, device: torch.device, num: int = 2048) -> float:
    z = torch.randn(num, G.z_dim, generator=torch.Generator().manual_seed(123)).to(device)
    w = G.mapping(z, None)[:, 0]
    return float((w - G.mapping.w_avg).norm(dim=-1).mean())


@torch.no_grad()
def _locality_code(G: nn.Module, pivot: torch.Tensor, alpha: float, psi: float,
                   gen: torch.Generator) -> torch.Tensor:
    """w_r = w_p + alpha * (w_z - w_p) / ||w_z - w_p|| for one random mapped w_z ([1, num_ws, w_dim])."""
    z = torch.randn(1, G.z_dim, generator=gen).to(pivot.device)
    w_z = G.mapping(z, None, truncation_psi=psi)                     # [1, num_ws, w_dim]
    d = w_z - pivot
    return pivot + alpha * d / d.flatten(1).norm(dim=1).clamp_min(1e-8).view(-1, 1, 1)


# -- cache -------------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$SVGEN_CACHE/pti`` or ``~/.cache/svgen/pti``."""
    root = os.environ.get("SVGEN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "svgen")
    return Path(root) / "pti"


def cache_key(photo_sha256: str, generator_sha256: str, pivot: np.ndarray, cfg: PTIConfig,
              extra: Optional[dict] = None, motion_offsets: Optional[np.ndarray] = None,
              mouth: Optional[tuple[np.ndarray, np.ndarray]] = None) -> str:
    """Hash of everything the tuned weights depend on (the motion offsets and mouth targets only when
    their term is on)."""
    h = hashlib.sha256()
    h.update(photo_sha256.encode())
    h.update(generator_sha256.encode())
    h.update(np.ascontiguousarray(pivot, dtype=np.float32).tobytes())
    if cfg.motion > 0 and motion_offsets is not None:
        h.update(np.ascontiguousarray(motion_offsets, dtype=np.float32).tobytes())
    if cfg.mouth > 0 and mouth is not None:
        for a in mouth:
            h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
    h.update(json.dumps({"cfg": asdict(cfg), **(extra or {})}, sort_keys=True).encode())
    return h.hexdigest()


def load_cached(G: nn.Module, path: Path, key: str) -> Optional[tuple[nn.Module, dict]]:
    """The tuned generator stored under ``path`` for ``key``, or None (missing or stale file)."""
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CACHE_FORMAT or ckpt.get("key") != key:
        return None
    G_t = copy.deepcopy(G)
    try:
        G_t.synthesis.load_state_dict(ckpt["synthesis"])
    except (KeyError, RuntimeError):
        return None
    return G_t.eval().requires_grad_(False), dict(ckpt.get("summary", {}))


def save_cached(G_t: nn.Module, path: Path, key: str, summary: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in G_t.synthesis.state_dict().items()}
    torch_save_atomic({"format": CACHE_FORMAT, "key": key, "synthesis": state,
                       "summary": json.loads(json.dumps(summary))}, path)


def tune_cached(G: nn.Module, pivot: torch.Tensor, target: torch.Tensor, cfg: PTIConfig, *,
                photo_sha256: str, generator_sha256: str, cache_dir: Optional[PathLike] = None,
                loss: Optional[ReconstructionLoss] = None, extra_key: Optional[dict] = None,
                show_progress: bool = True,
                motion_offsets: Optional[torch.Tensor] = None,
                mouth: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> tuple[nn.Module, dict]:
    """:func:`pivotal_tuning` through the cache; the summary says whether it was a cache hit."""
    from svgen.utils.progress import progress

    if cfg.steps <= 0:
        raise SvgenError(f"pivotal tuning needs a positive number of steps, got {cfg.steps}")
    _check_motion_offsets(cfg, motion_offsets)        # before the cache: the key would lack them
    key = cache_key(photo_sha256, generator_sha256, pivot.detach().cpu().numpy(), cfg, extra_key,
                    None if motion_offsets is None else motion_offsets.detach().cpu().numpy(),
                    None if mouth is None else tuple(a.detach().cpu().numpy() for a in mouth))
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"{key[:32]}.pt"
    hit = load_cached(G, path, key)
    if hit is not None:
        G_t, summary = hit
        return G_t.to(G.mapping.w_avg.device), {**summary, "cache": str(path), "cache_hit": True}
    bar = progress(total=cfg.steps, unit="step", desc="pivotal tuning",
                   **({} if show_progress else {"disable": True}))

    def tick(step: int, logs: dict) -> None:
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(psnr=f"{logs['psnr']:.1f}")

    try:
        G_t, summary = pivotal_tuning(G, pivot, target, cfg, loss=loss, on_step=tick, motion_offsets=motion_offsets,
                                      mouth=mouth)
    finally:
        bar.close()
    if not math.isfinite(summary["psnr_after"]):
        raise SvgenError("pivotal tuning diverged (non-finite reconstruction)")
    try:
        save_cached(G_t, path, key, summary)
        where = str(path)
    except (OSError, SvgenError):
        where = None  # a read-only cache only costs the next call the tuning time
    return G_t, {**summary, "cache": where, "cache_hit": False}


def summary_for_json(summary: dict[str, Any]) -> dict:
    """The PTI summary as recorded in ``<out>.json``."""
    keys = ("steps", "psnr_before", "psnr_after", "motion_offsets", "mouth_targets", "cache", "cache_hit", "config")
    return {k: summary[k] for k in keys if k in summary}
