"""The demo's budget and folder layout (shared by ``svgen demo``, its report and the Makefile), and
running one ``svgen`` command of it in a subprocess with its log."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from svgen.utils.errors import PathLike, SvgenError


@dataclass
class DemoConfig:
    """Budget of the demo: sized for <= 20 minutes on 2 CPU cores with the tiny preset, venv install
    included. Stage 1 gets the largest share: the tiny preset makes the actor's face from about
    10 kimg (2500 steps at batch 4) on; 14 kimg leaves a margin (63-64 of 64 samples from 13 to 16).
    The GRU needs about 1000 steps before its motion has the clip's amplitude along its two leading
    components, and more for the rest: its 100-frame samples move along the store's third to eighth
    principal components 0.06-0.31x as much as the clip after 1200 steps and 0.48-0.81x after 6000, and
    their rendered mouth 0.44x, 0.54x, 0.62x, 0.63x, 0.65x after 1200, 2000, 3000, 4000, 6000 steps (3
    samples of 150 frames; about 0.03 s a step). StyleInV likewise: its
    samples' RMS step in W is 0.065 after 150 steps, 0.22 after 600 (the clip's codes: 0.22) and
    0.10 after 1000, about 0.2 s a step. At the paper's learning rate (1e-4) 600 steps teach SI little of
    the mouth: its samples move along the store's (layer-mean) mouth direction 0.19x as much as the clip
    (0.185x with the latent regulariser off); at 1e-3 0.71x and 0.98x (training seeds 0 and 1; 400 steps:
    0.62x and 0.53x), and through PTI with the layer lift the animation's mouth is 0.61-0.98x of the clip's.
    The animations are 250 frames, animate's default: one motion's mouth figure depends on how much that
    stretch of it talks (the 4000-step GRU's seed 0 through PTI: 0.44x over 100 frames, 0.57x over 250;
    12 samples' first 100 frames along the store's mouth direction: 0.45-1.0x of the clip's), while the
    clip's own 100-frame windows move 0.92-1.06x as much as the whole clip."""

    clip_frames: int = 150          # synthetic driving clip: 6 s at 25 fps
    size: int = 64                  # aligned resolution (tiny preset)
    image_kimg: float = 14.0        # stage-1 training length
    encoder_kimg: float = 3.0       # W+ encoder training length
    encoder_w_kimg: float = 1.0     # W encoder (initialises StyleInV)
    refine_steps: int = 100         # invert's refinement per 16-frame chunk (mouth spread of the
    refine_lr: float = 0.1          # re-rendered clip: encoder 0.32x, refined 0.75x; ~1 min, L2 only)
    refine_msssim: float = 0.0
    motion_epochs: int = 4000       # GRU epochs over the clip's windows (6 windows of 25 frames: 1 step each)
    styleinv_steps: int = 600       # StyleInV iterations (latent mode)
    styleinv_lr: float = 1e-3       # SI's learning rate (the paper's 1e-4 is for 20 000+ steps)
    frames: int = 250               # length of the animation (animate's default, 10 s)
    fps: float = 25.0
    styleinv: bool = True


def make_vars(cfg: DemoConfig) -> str:
    """The demo budget as Makefile variable assignments (one source of truth for both entry points)."""
    return (f"SIZE={cfg.size} IMAGE_KIMG={cfg.image_kimg} ENCODER_KIMG={cfg.encoder_kimg} "
            f"ENCODER_W_KIMG={cfg.encoder_w_kimg} REFINE_STEPS={cfg.refine_steps} REFINE_LR={cfg.refine_lr:g} "
            f"REFINE_MSSSIM={cfg.refine_msssim:g} MOTION_EPOCHS={cfg.motion_epochs} "
            f"STYLEINV_STEPS={cfg.styleinv_steps} STYLEINV_LR={cfg.styleinv_lr:g} FRAMES={cfg.frames} FPS={cfg.fps:g}")


def animation_path(root: PathLike, photo: PathLike, model: str) -> Path:
    """``<root>/animation_<photo stem>_<model>.mp4``: each photo and motion model gets its own
    animation (the Makefile's ``ANIMATION`` uses the same rule, so ``make animate PHOTO=b.jpg``
    after ``PHOTO=a.jpg`` makes a new file instead of finding the old one up to date)."""
    return Path(root) / f"animation_{Path(photo).stem}_{model}.mp4"


class Paths:
    """Every artifact of a demo/work folder (the Makefile uses the same names)."""

    def __init__(self, root: PathLike):
        r = self.root = Path(root)
        self.input = r / "input"
        self.video = self.input / "video.mp4"
        self.photo = self.input / "identity.png"
        self.aligned = r / "aligned.zip"
        self.generator = r / "image" / "generator.pt"
        self.encoder = r / "encoder" / "encoder.pt"
        self.encoder_w = r / "encoder_w" / "encoder.pt"
        self.latents = r / "latents.h5"
        self.motion = {"gru": r / "motion_gru" / "motion.pt", "styleinv": r / "motion_styleinv" / "motion.pt"}
        self.animation = {m: animation_path(r, self.photo, m) for m in ("gru", "styleinv")}
        self.report = r / "report"
        self.logs = r / "logs"


def run_svgen(args: list, log: Path) -> None:
    """Run ``svgen ARGS`` in a subprocess; on failure show the log's last lines and stop."""
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "svgen.cli.main", *args]
    with open(log, "w") as fh:
        fh.write("$ svgen " + " ".join(args) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise SvgenError(f"demo step 'svgen {args[0]}' failed: {tail[0]} (full log: {log})")
