"""The StyleInV inference wrapper (what ``load_motion`` returns for ``"model": "styleinv"``): frame
times for a frame rate and slow-motion factor, the frozen generator that renders x0 = G(w0), and
W+ trajectories for sampling and animation."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch import nn

from svgen.stage2_motion.styleinv.layer_lift import LayerLift, describe_layer_lift
from svgen.stage2_motion.styleinv.model import MODEL_NAME, StyleInV, config_from_checkpoint, sample_motion_noise
from svgen.utils.errors import PathLike, SvgenError


def _resolve_path(recorded: Optional[str], ckpt_path: Optional[PathLike]) -> Optional[str]:
    """A recorded path as given if it exists, else relative to the checkpoint's folder."""
    if not recorded:
        return None
    if os.path.exists(recorded) or ckpt_path is None:
        return recorded
    alt = Path(ckpt_path).resolve().parent / Path(recorded).name
    return str(alt) if alt.exists() else recorded


def frame_times(frames: int, fps: Optional[float], train_fps: float, slowmo: float = 1.0,
                time_offset: float = 0.0) -> np.ndarray:
    """Time stamps (training-frame units) of ``frames`` output frames at ``fps``.

    One output frame advances ``train_fps / fps / slowmo`` training frames, so ``--fps 60`` samples
    the same motion more densely and ``slowmo 4`` plays it four times slower.
    """
    if frames <= 0:
        raise SvgenError(f"number of frames must be positive, got {frames}")
    fps = train_fps if fps is None else float(fps)
    if fps <= 0 or slowmo <= 0:
        raise SvgenError(f"fps and slow-motion factor must be positive (fps {fps}, slowmo {slowmo})")
    if time_offset < 0:
        raise SvgenError(f"time offset must be >= 0, got {time_offset}")
    step = train_fps / fps / slowmo
    return (float(time_offset) + np.arange(frames, dtype=np.float64) * step).astype(np.float32)


class StyleInVMotion:
    """A trained StyleInV model for sampling and animation (``load_motion`` returns this).

    The frozen generator is needed to render x0 = G(w0); it is loaded on first use from
    ``generator_path`` (recorded at training time) and checked against ``generator_sha256``, or
    attached with :meth:`attach_generator`.
    """

    model_name = MODEL_NAME
    pca = None          # no offset trick: w0 is the identity itself
    calibration = None  # no spread calibration (stage2_motion/calibration.py; the GRU's)
    calibrated = False

    def __init__(self, si: StyleInV, *, generator_sha256: str = "", generator_path: Optional[str] = None,
                 encoder_path: Optional[str] = None, train_fps: float = 25.0, noise_mode: str = "const",
                 device: str | torch.device = "cpu", meta: Optional[dict] = None,
                 layer_lift: Optional[LayerLift] = None):
        self.si = si.eval().requires_grad_(False).to(device)
        self.layer_lift = layer_lift   # W motion -> W+ motion of a W+ training store (None: broadcast)
        self.lifted = layer_lift is not None   # --layer-lift auto; use_layer_lift switches it off or on
        self.cfg = si.cfg
        self.device = torch.device(device)
        self.generator_sha256 = generator_sha256
        self.generator_path = generator_path
        self.encoder_path = encoder_path
        self.train_fps = float(train_fps)
        self.noise_mode = noise_mode
        self.meta = dict(meta or {})
        self.num_ws = int(self.cfg.num_ws)
        self.w_dim = int(self.cfg.w_dim)
        self._G = None

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, ckpt: dict, path: Optional[PathLike] = None,
                        device: str | torch.device = "cpu") -> "StyleInVMotion":
        """Build from a ``svgen-motion`` checkpoint dict with ``"model": "styleinv"`` (EMA weights)."""
        if ckpt.get("model") != MODEL_NAME:
            raise SvgenError(f"not a StyleInV motion checkpoint (model {ckpt.get('model')!r})", path)
        try:
            cfg = config_from_checkpoint(ckpt)
            si = StyleInV(cfg)
            si.load_state_dict(ckpt.get("ema") or ckpt["SI"])
        except (KeyError, RuntimeError, TypeError) as exc:
            msg = str(exc).splitlines()[0][:200]
            raise SvgenError(f"StyleInV checkpoint does not match its config ({msg})", path) from None
        lift = ckpt.get("layer_lift")
        lift = None if lift is None else LayerLift.from_dict(lift, int(cfg.num_ws), int(cfg.w_dim), path)
        return cls(si, generator_sha256=ckpt.get("generator_sha256", ""),
                   generator_path=_resolve_path(ckpt.get("generator_path"), path),
                   encoder_path=_resolve_path(ckpt.get("encoder_path"), path),
                   train_fps=float(ckpt.get("train_fps", 25.0)),
                   noise_mode=ckpt.get("noise_mode", "const"), device=device,
                   meta=ckpt.get("meta", {}), layer_lift=lift)

    def attach_generator(self, G: nn.Module, check: bool = True) -> None:
        """Use an already loaded generator (its shape must match the model's)."""
        if check and (int(G.w_dim) != self.w_dim or int(G.num_ws) != self.num_ws):
            raise SvgenError(f"generator (w_dim {G.w_dim}, num_ws {G.num_ws}) does not match the motion "
                             f"model (w_dim {self.w_dim}, num_ws {self.num_ws})", self.generator_path)
        self._G = G.eval().requires_grad_(False).to(self.device)

    @property
    def G(self) -> nn.Module:
        if self._G is None:
            if not self.generator_path:
                raise SvgenError("StyleInV needs its generator to render the first frame; none is "
                                 "recorded in the motion checkpoint (pass --generator)")
            from svgen.stage1_image_gan.checkpoints import load_checked_generator

            self.attach_generator(load_checked_generator(self.generator_path, self.generator_sha256, self.device))
        return self._G

    # -- sampling ----------------------------------------------------------------------------
    def _w0_batch(self, w0: Any, num: int) -> torch.Tensor:
        w0 = torch.as_tensor(np.asarray(w0) if not torch.is_tensor(w0) else w0, dtype=torch.float32)
        if w0.ndim == 3:          # [N, num_ws, w_dim] W+ -> mean over layers
            w0 = w0.mean(dim=1)
        if w0.ndim == 1:
            w0 = w0[None]
        if w0.shape[-1] != self.w_dim:
            raise SvgenError(f"w0 has {w0.shape[-1]} dims, the motion model expects {self.w_dim}")
        if w0.shape[0] == 1 and num > 1:
            w0 = w0.expand(num, -1)
        if w0.shape[0] != num:
            raise SvgenError(f"got {w0.shape[0]} first-frame codes for {num} videos")
        return w0.to(self.device)

    def _prepare(self, num: int, frames: int, seed: int, fps: Optional[float], w0: Any, slowmo: float,
                 time_offset: float, truncation_psi: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(frame times [frames], first-frame codes [num, w_dim], motion noise) of one sampling call."""
        if num <= 0:
            raise SvgenError(f"number of videos must be positive, got {num}")
        t = torch.from_numpy(frame_times(frames, fps, self.train_fps, slowmo, time_offset))
        gen = torch.Generator().manual_seed(int(seed))
        if w0 is None:  # new content codes from the mapping network (StyleInV's generation)
            z = torch.randn(num, int(self.G.z_dim), generator=gen).to(self.device)
            w0 = self.G.mapping(z, truncation_psi=truncation_psi)[:, 0]
        w0 = self._w0_batch(w0, num)
        z_m = sample_motion_noise(num, self.si.ffa_ape.num_anchors(float(t.max())),
                                  self.cfg.z_motion_dim, gen).to(self.device)
        return t, w0, z_m

    def _x0(self, w0: torch.Tensor) -> torch.Tensor:
        """The first frames x0 = G(w0) [n, 3, R, R] StyleInV's encoder modulates."""
        return self.G.synthesis(w0[:, None, :].expand(-1, self.num_ws, -1), noise_mode=self.noise_mode)

    @torch.no_grad()
    def sample_w(self, num: int, frames: int, seed: int = 0, fps: Optional[float] = None,
                 w0: Any = None, slowmo: float = 1.0, time_offset: float = 0.0,
                 truncation_psi: float = 1.0, chunk: int = 64, max_batch_frames: int = 512) -> torch.Tensor:
        """W-space trajectories [num, frames, w_dim] (frame 0 at t = time_offset).

        Frames are encoded in chunks of ``chunk`` time stamps, several videos at once (at most
        ``max_batch_frames`` encoder passes per call); results do not depend on the chunking.
        Videos are the outer loop, so only one batch of first frames is held (many short videos).
        """
        t, w0, z_m = self._prepare(num, frames, seed, fps, w0, slowmo, time_offset, truncation_psi)
        out = torch.empty(num, frames, self.w_dim)
        chunk = max(1, min(int(chunk), frames))
        per_batch = max(1, max_batch_frames // chunk)      # videos encoded together
        for i in range(0, num, per_batch):
            j = min(num, i + per_batch)
            x0 = self._x0(w0[i:j])
            for a in range(0, frames, chunk):
                tt = t[a:a + chunk][None].expand(j - i, -1).to(self.device)
                out[i:j, a:a + chunk] = self.si(x0, w0[i:j], z_m[i:j], tt).float().cpu()
        return out

    @torch.no_grad()
    def iter_sample_w(self, num: int, frames: int, seed: int = 0, fps: Optional[float] = None,
                      w0: Any = None, slowmo: float = 1.0, time_offset: float = 0.0,
                      truncation_psi: float = 1.0, chunk: int = 64,
                      max_batch_frames: int = 512) -> Iterator[torch.Tensor]:
        """:meth:`sample_w` chunk by chunk in time: yields [num, n, w_dim] for consecutive frames, the
        same values (same encoder calls); time is the outer loop, so memory does not grow with
        ``frames`` (a few long videos: animate, sample)."""
        prepared = self._prepare(num, frames, seed, fps, w0, slowmo, time_offset, truncation_psi)
        return self._stream_w(*prepared, num=num, frames=frames, chunk=chunk, max_batch_frames=max_batch_frames)

    def _stream_w(self, t: torch.Tensor, w0: torch.Tensor, z_m: torch.Tensor, *, num: int, frames: int,
                  chunk: int, max_batch_frames: int) -> Iterator[torch.Tensor]:
        chunk = max(1, min(int(chunk), frames))
        per_batch = max(1, max_batch_frames // chunk)
        batches = [(i, min(num, i + per_batch)) for i in range(0, num, per_batch)]
        with torch.no_grad():
            x0s = [self._x0(w0[i:j]) for i, j in batches]
            for a in range(0, frames, chunk):
                parts = [self.si(x0, w0[i:j], z_m[i:j], t[a:a + chunk][None].expand(j - i, -1).to(self.device))
                         for (i, j), x0 in zip(batches, x0s)]
                yield torch.cat(parts).float().cpu()

    def to_wplus(self, w: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """W codes [num, n, w_dim] of videos whose first frame is ``first`` [num, w_dim] -> W+
        [num, n, num_ws, w_dim]: broadcast to every layer, or with the :class:`LayerLift` in use the
        motion from the first frame lifted onto the layers as the training store moves them."""
        if self.layer_lift is None or not self.lifted:
            return w[:, :, None, :].expand(-1, -1, self.num_ws, -1).contiguous()
        first = first.to(w)[:, None, :]
        return (first[:, :, None, :] + self.layer_lift.apply(w - first)).contiguous()

    def sample(self, num: int, frames: int, seed: int = 0, fps: Optional[float] = None,
               w0: Any = None, **kw: Any) -> torch.Tensor:
        """Latent videos [num, frames, num_ws, w_dim] (see :meth:`to_wplus`)."""
        w = self.sample_w(num, frames, seed=seed, fps=fps, w0=w0, **kw)
        return self.to_wplus(w, w[:, 0])

    def sample_chunks(self, num: int, frames: int, seed: int = 0, chunk: int = 64, fps: Optional[float] = None,
                      w0: Any = None, slowmo: float = 1.0, time_offset: float = 0.0, truncation_psi: float = 1.0,
                      max_batch_frames: int = 512) -> Iterator[torch.Tensor]:
        """:meth:`sample` chunk by chunk: [num, n, num_ws, w_dim] for consecutive frames."""
        t, w0, z_m = self._prepare(num, frames, seed, fps, w0, slowmo, time_offset, truncation_psi)
        first = None
        for w in self._stream_w(t, w0, z_m, num=num, frames=frames, chunk=chunk, max_batch_frames=max_batch_frames):
            first = w[:, 0] if first is None else first
            yield self.to_wplus(w, first)

    def animate_latents(self, w_identity: Any, frames: int, fps: float, seed: int = 0,
                        **kw: Any) -> np.ndarray:
        """:meth:`animate_chunks` gathered into one array float32 [frames, num_ws, w_dim]."""
        return np.concatenate(list(self.animate_chunks(w_identity, frames, fps, seed, **kw)))

    def animate_chunks(self, w_identity: Any, frames: int, fps: float, seed: int = 0,
                       **kw: Any) -> Iterator[np.ndarray]:
        """Motion for one identity, chunk by chunk: w0 = its W code (mean over layers of a W+
        inversion; exact for a W encoder) and t sampled at ``fps`` (each chunk's times computed
        directly). Yields float32 [n, num_ws, w_dim] for consecutive frames."""
        w = torch.as_tensor(np.asarray(w_identity, dtype=np.float32))
        if w.ndim == 2:
            if tuple(w.shape) != (self.num_ws, self.w_dim):
                raise SvgenError(f"identity latent has shape {tuple(w.shape)}, expected "
                                 f"[{self.num_ws}, {self.w_dim}]")
            w = w.mean(dim=0)
        if w.ndim != 1 or w.shape[0] != self.w_dim:
            raise SvgenError(f"identity latent has shape {tuple(w.shape)}, expected [{self.w_dim}]")
        info = kw.get("info")
        kw = {k: v for k, v in kw.items() if k in ("slowmo", "time_offset", "chunk", "max_batch_frames")}
        if isinstance(info, dict):  # recorded in animate's settings JSON
            slowmo = float(kw.get("slowmo", 1.0))
            info.update({"model": MODEL_NAME, "train_fps": self.train_fps, "slowmo": slowmo,
                         "training_frames_per_output_frame": self.train_fps / float(fps or self.train_fps) / slowmo,
                         "w0": "mean over layers of the identity latent", "offset": "not used (w0 is the identity)",
                         "layer_lift": describe_layer_lift(self)})
        for out in self.sample_chunks(1, frames, seed=seed, fps=fps, w0=w[None], **kw):
            yield out[0].numpy().astype(np.float32)
