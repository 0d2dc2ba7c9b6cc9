"""Which gradient-penalty units and critic schedule train the GRU motion model on real video latents;
prints one JSON object.

Issue #13: penalising the critic's gradient in normalised latents ((w - w_mean) / w_std) is not the
paper's objective: at w_std = 0.1 it trains like lambda_GP = 5 and lambda_GAP = 10. This script trains
every variant below on the same latents with the same seeds and reports, per variant and seed:

- the latent FD curve of the EMA generator (``metrics.jsonl``: at initialisation, every snapshot, at
  the end), its minimum and whether it ends above its value at initialisation (``diverged``);
- the loop score and motion magnitude of long samples (from the trainer's own evaluation);
- the critic's final gradient penalty and Wasserstein estimate (a blow-up shows as large values);
- with ``--generator``: the landmark-motion Fréchet distance (``svgen.metrics.landmark_motion``) of
  rendered samples against the rendered real latents, next to its real-halves / frozen / shuffled
  references (rendering both sides with the same generator isolates the motion model).

Variants (all at the paper's lambda_GP = 50 and lambda_GAP = 100):
``normalised-1c``: the previous default (penalty in normalised units, 1 critic step, lr_G = 2 lr_C);
``raw-1c``: the paper's raw-unit penalty with that schedule; ``raw-5c``: raw units, 5 critic steps per
generator step, equal rates 2e-4 (Adam betas 0.5, 0.999); ``raw-5c-gp``: Gulrajani et al.'s recipe
(5 critic steps, rates 1e-4, Adam betas 0, 0.9). Every variant runs the same number of generator steps.

Usage: ``python benchmarks/gru_penalty.py --latents latents.h5 [--generator generator.pt]
[--gen-steps 300] [--seeds 0 1] [--variants raw-5c ...] [--small] [--out DIR]``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

VARIANTS: dict[str, dict[str, Any]] = {
    "normalised-1c": dict(penalty_units="normalised", n_critic=1, lr_G=4e-4, lr_C=2e-4),
    "raw-1c": dict(penalty_units="raw", n_critic=1, lr_G=4e-4, lr_C=2e-4),
    "raw-5c": dict(penalty_units="raw", n_critic=5, lr_G=2e-4, lr_C=2e-4),
    "raw-5c-gp": dict(penalty_units="raw", n_critic=5, lr_G=1e-4, lr_C=1e-4, betas=(0.0, 0.9)),
}


# the test suite's network widths (tests/stage2_motion): runs that fit a loaded CPU machine
SMALL = dict(h_hidden=(32,), t_hidden=(32, 64), e_hidden=(64, 64, 32, 32, 32), c_channels=(32, 64))


def real_reference(latents: str, window: int, G_img: Any, landmark_frames: int) -> dict:
    """Loop score of the real latents and, with a generator, landmark features of their renders."""
    from svgen.inversion.latent_store import LatentStore
    from svgen.metrics.looping import loop_score

    with LatentStore(latents) as st:
        trajs = {c: st.read(c, as_wplus=True) for c in st.clips}
        fps = float(st.fps(st.clips[0]))
        sigma = float(np.sqrt(np.concatenate([t.reshape(len(t), -1) for t in trajs.values()]).var(0).mean()))
    out: dict[str, Any] = {"fps": fps, "frames": {c: len(t) for c, t in trajs.items()},
                           "per_component_std": sigma,
                           "loop": float(np.mean([loop_score(t, window) for t in trajs.values()]))}
    if G_img is not None:
        out["features"] = [_render_features(G_img, t[:landmark_frames], fps, f"real {c}")
                           for c, t in trajs.items()]
    return out


def _render_features(G_img: Any, traj: np.ndarray, fps: float, name: str) -> Any:
    from svgen.metrics.landmark_motion import frames_features
    from svgen.stage1_image_gan.render import render_frames

    return frames_features(render_frames(G_img, traj[None]), fps, name)


def run_variant(name: str, seed: int, args: argparse.Namespace, root: Path, G_img: Any,
                real: dict) -> dict:
    """Train one variant with one seed; its curve, final statistics and (optionally) landmark FD."""
    from svgen.stage2_motion.gru.model import GRUMotionConfig
    from svgen.stage2_motion.gru.train import GRUTrainConfig, GRUTrainer
    from svgen.utils.logging import read_jsonl

    spec = dict(VARIANTS[name])
    n_critic = int(spec["n_critic"])
    out = root / f"{name}-seed{seed}"
    sizes = SMALL if args.small else {}
    cfg = GRUTrainConfig(latents=args.latents, out=str(out), model=GRUMotionConfig(window=args.window, **sizes),
                         epochs=10 ** 6, steps=args.gen_steps * n_critic, batch=args.batch, stride=args.stride,
                         snapshot_every=args.snapshot_every, keep_every=0, eval_windows=args.eval_windows,
                         eval_long_frames=args.long_frames, seed=seed, device=args.device, **spec)
    t0 = time.perf_counter()
    tr = GRUTrainer(cfg)
    tr.train()
    seconds = time.perf_counter() - t0
    curve = read_jsonl(out / "metrics.jsonl")
    logs = read_jsonl(out / "log.jsonl")
    fds = [m["latent_fd"] for m in curve]
    last = curve[-1]
    res: dict[str, Any] = {
        "seconds": round(seconds, 1),
        "latent_fd_init": fds[0], "latent_fd_final": fds[-1], "latent_fd_min": min(fds),
        "latent_fd_curve": [(m["step"] // n_critic, round(m["latent_fd"], 3)) for m in curve],
        "diverged": bool(not math.isfinite(fds[-1]) or fds[-1] >= fds[0]),
        "loop": last["loop"], "loop_max": last["loop_max"], "motion": last["motion"],
        "final_gp": logs[-1]["gp"] if logs else None, "final_wdist": logs[-1]["wdist"] if logs else None,
        "max_abs_wdist": max((abs(r["wdist"]) for r in logs), default=None),
    }
    if G_img is not None:
        from svgen.metrics.landmark_motion import compare

        ws = tr.G_ema.sample(args.landmark_samples, args.landmark_frames, seed=1000 + seed).numpy()
        fake = [_render_features(G_img, w, real["fps"], f"sample {k}") for k, w in enumerate(ws)]
        cmp = compare(real["features"], fake)
        res["landmark_fd"] = cmp["value"]
        res["landmark_face_detected"] = cmp["targets"]["face_detected"]
        res["landmark_mar_spread_ratio"] = cmp["targets"]["mar_spread_ratio"]
        real.setdefault("landmark_refs", {k: cmp[k] for k in ("ref_real_halves", "ref_frozen", "ref_shuffled")})
    return res


def summarise(runs: dict[str, dict[int, dict]]) -> dict:
    """Mean over seeds of the headline numbers of each variant."""
    keys = ("latent_fd_init", "latent_fd_final", "latent_fd_min", "loop", "motion", "landmark_fd", "seconds")
    out = {}
    for name, by_seed in runs.items():
        rows = list(by_seed.values())
        out[name] = {k: float(np.mean([r[k] for r in rows])) for k in keys if all(k in r for r in rows)}
        out[name]["diverged_runs"] = int(sum(r["diverged"] for r in rows))
    return out


def main(argv: Optional[list[str]] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latents", required=True, help="latents.h5 of a real video (svgen invert)")
    ap.add_argument("--generator", default=None, help="its generator.pt: adds the landmark-motion metric")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--gen-steps", type=int, default=300, help="generator steps per run")
    ap.add_argument("--window", type=int, default=25)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--stride", type=int, default=1)
    ap.add_argument("--snapshot-every", type=int, default=30,
                    help="steps between latent-FD evaluations (the README's runs: every 10 epochs, 30 steps)")
    ap.add_argument("--eval-windows", type=int, default=128)
    ap.add_argument("--long-frames", type=int, default=250)
    ap.add_argument("--landmark-samples", type=int, default=3)
    ap.add_argument("--landmark-frames", type=int, default=150)
    ap.add_argument("--small", action="store_true", help="the tests' network widths instead of the paper's")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    G_img = None
    if args.generator:
        from svgen.stage1_image_gan.checkpoints import load_checked_generator

        G_img = load_checked_generator(args.generator, device=args.device)
    real = real_reference(args.latents, args.window, G_img, args.landmark_frames)
    runs: dict[str, dict[int, dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        for name in args.variants:
            for seed in args.seeds:
                runs.setdefault(name, {})[seed] = run_variant(name, seed, args, root, G_img, real)
    report = {
        "protocol": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "variants": {k: VARIANTS[k] for k in args.variants},
        "real": {k: v for k, v in real.items() if k != "features"},
        "summary": summarise(runs), "runs": runs,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
    }
    print(json.dumps(report, indent=1, default=float))
    return report


if __name__ == "__main__":
    main()
