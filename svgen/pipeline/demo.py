"""``svgen demo``: the whole pipeline on an embedded default input, with the same commands a user
types. Each step runs ``svgen <command>`` in a subprocess, logs to ``<out>/logs/<step>.log`` and is
skipped when its artifact already exists, so an interrupted demo resumes where it stopped.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

from svgen.demo.build_report import build_report
from svgen.demo.layout import DemoConfig, Paths, run_svgen
from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.io import write_json


def prepare_input(paths: Paths, cfg: DemoConfig, video: Optional[PathLike] = None,
                  photo: Optional[PathLike] = None, seed: int = 0) -> None:
    """Put the driving video and the identity photo into ``<out>/input`` (links to the user's files,
    or the embedded default: a procedural talking head made from scikit-image's astronaut and
    matplotlib's portrait of Grace Hopper)."""
    from svgen.demo.synth_talk import default_identity_photo, synthesize_talking_head

    paths.input.mkdir(parents=True, exist_ok=True)
    if video is not None:
        src = Path(video).resolve()
        if not src.is_file():
            raise SvgenError("video does not exist", video)
        _link(src, paths.video)
    elif not paths.video.exists():
        print(f"[demo] synthesising a {cfg.clip_frames}-frame talking-head clip -> {paths.video}",
              file=sys.stderr)
        synthesize_talking_head(paths.video, num_frames=cfg.clip_frames, fps=cfg.fps, seed=seed)
    if photo is not None:
        src = Path(photo).resolve()
        if not src.is_file():
            raise SvgenError("photo does not exist", photo)
        _link(src, paths.photo.with_suffix(src.suffix.lower()))
        if src.suffix.lower() != paths.photo.suffix:
            _link(paths.photo.with_suffix(src.suffix.lower()), paths.photo)
    elif not paths.photo.exists():
        from PIL import Image

        Image.open(default_identity_photo()).convert("RGB").save(paths.photo)


def _link(src: Path, dst: Path) -> None:
    if dst.is_symlink() or dst.exists():
        if dst.resolve() == src.resolve():
            return
        dst.unlink()
    try:
        os.symlink(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def pipeline_steps(paths: Paths, cfg: DemoConfig, device: str, seed: int) -> list[tuple[str, Path, list]]:
    """(name, artifact, svgen arguments) for every step, in order."""
    common = ["--device", device, "--seed", str(seed)]
    steps = [
        ("preprocess", paths.aligned,
         ["preprocess", str(paths.video), "--out", str(paths.aligned), "--size", str(cfg.size), "--seed", str(seed)]),
        ("train-image", paths.generator,
         ["train-image", "--data", str(paths.aligned), "--out", str(paths.generator.parent), "--preset", "tiny",
          "--kimg", str(cfg.image_kimg), *common]),
        ("train-encoder", paths.encoder,
         ["train-encoder", "--generator", str(paths.generator), "--data", str(paths.aligned), "--space", "w+",
          "--out", str(paths.encoder.parent), "--kimg", str(cfg.encoder_kimg), *common]),
        ("invert", paths.latents,
         ["invert", "--generator", str(paths.generator), "--encoder", str(paths.encoder), "--data",
          str(paths.aligned), "--out", str(paths.latents), "--refine-steps", str(cfg.refine_steps),
          "--refine-lr", str(cfg.refine_lr), "--refine-msssim", str(cfg.refine_msssim), *common]),
        ("train-motion", paths.motion["gru"],
         ["train-motion", "--latents", str(paths.latents), "--model", "gru", "--generator", str(paths.generator),
          "--encoder", str(paths.encoder), "--out", str(paths.motion["gru"].parent), "--epochs",
          str(cfg.motion_epochs), *common]),
        ("animate", paths.animation["gru"],
         ["animate", "--identity", str(paths.photo), "--motion", str(paths.motion["gru"]), "--generator",
          str(paths.generator), "--encoder", str(paths.encoder), "--frames", str(cfg.frames), "--fps",
          str(cfg.fps), "--out", str(paths.animation["gru"]), *common]),
    ]
    if cfg.styleinv:
        steps += [
            ("train-encoder-w", paths.encoder_w,
             ["train-encoder", "--generator", str(paths.generator), "--data", str(paths.aligned), "--space", "w",
              "--out", str(paths.encoder_w.parent), "--kimg", str(cfg.encoder_w_kimg), *common]),
            ("train-motion-styleinv", paths.motion["styleinv"],
             ["train-motion", "--latents", str(paths.latents), "--model", "styleinv", "--generator",
              str(paths.generator), "--encoder", str(paths.encoder_w), "--data", str(paths.aligned), "--out",
              str(paths.motion["styleinv"].parent), "--steps", str(cfg.styleinv_steps), *common]),
            ("animate-styleinv", paths.animation["styleinv"],
             ["animate", "--identity", str(paths.photo), "--motion", str(paths.motion["styleinv"]),
              "--generator", str(paths.generator), "--encoder", str(paths.encoder_w), "--frames",
              str(cfg.frames), "--fps", str(cfg.fps), "--out", str(paths.animation["styleinv"]), *common]),
        ]
    return steps


def _resumable(name: str, artifact: Path) -> bool:
    """Whether an interrupted earlier run of this step left state to resume from."""
    if name == "invert":
        from svgen.inversion.latent_store import partial_path

        return partial_path(artifact).exists()
    return name.startswith("train-") and (artifact.parent / "checkpoints" / "latest.pt").exists()


def run_pipeline(paths: Paths, cfg: DemoConfig, device: str = "auto", seed: int = 0) -> dict:
    """Run every missing step; returns {step: seconds} (0 for steps that were already done)."""
    timings = {}
    for name, artifact, args in pipeline_steps(paths, cfg, device, seed):
        if artifact.exists():
            print(f"[demo] {name}: {artifact} exists, skipped", file=sys.stderr)
            timings[name] = 0.0
            continue
        if _resumable(name, artifact):
            args = [*args, "--resume"]
        print(f"[demo] {name}: svgen {' '.join(args)}", file=sys.stderr)
        t0 = time.time()
        run_svgen(args, paths.logs / f"{name}.log")
        timings[name] = round(time.time() - t0, 1)
        print(f"[demo] {name}: done in {timings[name]:.0f} s", file=sys.stderr)
    return timings


def run_demo(out: PathLike, cfg: Optional[DemoConfig] = None, video: Optional[PathLike] = None,
             photo: Optional[PathLike] = None, device: str = "auto", seed: int = 0,
             stage: str = "all") -> Path:
    """The whole demo (``stage="all"``) or one part of it (``input``, ``pipeline``, ``report``)."""
    cfg = cfg or DemoConfig()
    paths = Paths(out)
    paths.root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if stage in ("all", "input"):
        prepare_input(paths, cfg, video, photo, seed)
    timings = {}
    if stage in ("all", "pipeline"):
        timings = run_pipeline(paths, cfg, device, seed)
    if stage in ("all", "report"):
        index = build_report(paths, cfg, device=device, seed=seed)
        if timings:
            write_json(paths.report / "timings.json", {"steps_s": timings, "total_s": round(time.time() - t0, 1)})
        print(f"[demo] results page: {index}", file=sys.stderr)
        return index
    return paths.root
