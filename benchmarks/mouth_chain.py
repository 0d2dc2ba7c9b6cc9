"""Where the mouth motion is lost between the training clip and an animated photo; printed as JSON.

Issue #17 asks that an animation's mouth move 0.5-2x as much as the training clip's. This follows
the motion through every stage of a trained work folder (``make demo`` or the Makefile chain) and
measures, with the demo's own landmark features (dlib's 68 landmarks, ``svgen.metrics.landmark_motion``),
the spread (std) of the mouth aspect ratio, eye aspect ratio, yaw and pitch at each stage, as a
ratio to the training clip's:

- ``store``: the clip's inverted codes (``latents.h5``) rendered by the generator: what inversion keeps;
- ``<model> samples``: the motion model's own trajectories (no offset) rendered by the generator:
  what the motion model makes of the store;
- ``<model> on <photo>, untuned``: ``svgen animate --tune none`` (PCA offset, every layer moving);
- ``<model> on <photo>, pti``: ``svgen animate``'s default (pivotal tuning, mean offset, coarse layers).

Every figure is the mean over ``--seeds`` motions of ``--frames`` frames (per-seed mouth figures are
listed too: at 64 px one motion's mouth figure varies by about +-0.1). The animations are rendered
in memory with exactly the latents ``svgen animate`` would write (``svgen.pipeline.animate``).

Run: ``.venv/bin/python benchmarks/mouth_chain.py --work demo [--photos a.jpg ...] [--seeds 3]``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = Path(os.environ.get("SVGEN_SHARED", REPO.parent / "shared")).resolve()
PHOTOS = ["photos/deep3dfacerecon/000031.jpg", "photos/hyperstyle_aligned/jackson.jpg"]


def features(G, latents: np.ndarray, backend):
    """Landmark features (``FeatureSeries``) of the frames ``G`` renders from latents [T, num_ws, w_dim]."""
    from svgen.metrics import landmark_motion as lmm
    from svgen.stage1_image_gan.render import render_frames

    return lmm.frames_features(render_frames(G, latents[None], batch=16), 25.0, backend=backend)


def row(name: str, per_seed: list, clip: list) -> dict:
    """One stage's figures: each feature's spread ratio to the clip's (``motion_targets``, the demo's
    mouth check; mean over seeds, None where under half of a seed's frames show a face), the
    per-seed mouth ratios and the share of rendered frames in which dlib found a face."""
    from svgen.metrics import landmark_motion as lmm

    targets = [lmm.motion_targets([s], clip) for s in per_seed]
    faces = float(np.mean([t["face_detected"] for t in targets]))
    ratios = np.asarray([[t[f"{f}_spread_ratio"] if t["face_detected"] >= 0.5 else np.nan for f in lmm.FEATURES]
                         for t in targets])                                  # [seeds, features]
    out = {"stage": name, "face_frames": round(faces, 3)}
    for f, v in zip(lmm.FEATURES, ratios.mean(0)):
        out[f"{f}_ratio"] = round(float(v), 3) if np.isfinite(v) else None
    out["mar_ratio_per_seed"] = [round(float(v), 3) if np.isfinite(v) else None for v in ratios[:, 0]]
    text = ("  ".join(f"{label} {out[f'{f}_ratio']:.2f}x" for label, f in
                      (("mouth", "mar"), ("eyes", "ear"), ("yaw", "yaw"), ("pitch", "pitch")))
            if out["mar_ratio"] is not None else "not measured (too few faces)")
    print(f"{name:>42}: {text}  faces {100 * faces:.0f} %", file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=REPO / "demo", help="trained work folder")
    ap.add_argument("--photos", nargs="*", type=Path,
                    default=None, help="photos to animate (default: the demo photo and two held-out ones)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--models", nargs="*", default=["gru", "styleinv"], help="motion models to follow")
    ap.add_argument("--calibration", choices=["on", "off"], default="on",
                    help="the motion model's spread calibration (svgen/stage2_motion/calibration.py)")
    args = ap.parse_args()

    import h5py

    from svgen.inversion.api import invert_images
    from svgen.inversion.encoders import load_encoder
    from svgen.metrics import landmark_motion as lmm
    from svgen.pipeline.animate import (AnimateSettings, _motion_layers, _sampled_stream, resolved_offset,
                                        tune_identity)
    from svgen.preprocessing.landmarks import DlibLandmarks
    from svgen.preprocessing.pipeline import align_photo
    from svgen.stage1_image_gan.checkpoints import load_generator
    from svgen.stage2_motion import load_motion
    from svgen.stage2_motion.calibration import use_calibration
    from svgen.stage2_motion.offset import hold_layers
    from svgen.utils.io import file_sha256

    work = args.work
    for need in ("image/generator.pt", "latents.h5", "aligned.zip"):
        if not (work / need).is_file():
            sys.exit(f"mouth_chain: {work / need} is missing: run `make demo` (or the Makefile chain) into {work} first")
    photos = args.photos if args.photos is not None else (
        [work / "input/identity.png"] + [SHARED / "data" / p for p in PHOTOS])
    gen_path = work / "image/generator.pt"
    G = load_generator(gen_path).eval()
    gen_sha = file_sha256(gen_path)
    backend = DlibLandmarks()

    clip = lmm.dataset_features(work / "aligned.zip")
    clip_std = np.average([np.nanstd(s.filled(), axis=0) for s in clip], axis=0, weights=[len(s) for s in clip])
    print(f"{'training clip':>42}: mouth std {clip_std[0]:.4f} (1x)", file=sys.stderr)
    rows = []
    with h5py.File(work / "latents.h5", "r") as h:
        store = [np.asarray(h["clips"][k]["w"], np.float32) for k in h["clips"]]
    rows.append(row("store", [features(G, w, backend) for w in store], clip))

    calibration = {}
    for name in args.models:
        if not (work / f"motion_{name}/motion.pt").is_file():
            continue
        model = load_motion(work / f"motion_{name}/motion.pt")
        calibration[name] = use_calibration(model, args.calibration == "on")
        model.attach_generator(G)
        E = load_encoder(work / ("encoder_w" if name == "styleinv" else "encoder") / "encoder.pt")
        w0 = store[0][0]
        samples = [np.concatenate(list(model.animate_chunks(w0, args.frames, 25.0, seed=s, offset="none")))
                   for s in range(args.seeds)]
        rows.append(row(f"{name} samples", [features(G, q, backend) for q in samples], clip))
        for photo in photos:
            aligned = align_photo(photo, size=G.img_resolution)
            w_id = invert_images(G, E, aligned[None])[0]
            for tune in ("none", "pti"):
                st = AnimateSettings(identity=str(photo), out="unused.mp4", tune=tune)
                render_G = G if tune == "none" else tune_identity(G, w_id, aligned, st, gen_sha)[0]
                offset = resolved_offset(st)
                moving = _motion_layers(st, G.num_ws, G.img_resolution)
                per_seed = []
                for s in range(args.seeds):
                    seq = np.concatenate(list(_sampled_stream(model, w_id, args.frames, 25.0, s, offset, st,
                                                              None, [])))
                    per_seed.append(features(render_G, hold_layers(seq, w_id, moving), backend))
                label = "pti" if tune == "pti" else "untuned"
                rows.append(row(f"{name} on {Path(photo).stem}, {label}", per_seed, clip))
    print(json.dumps({"work": str(work), "frames": args.frames, "seeds": args.seeds, "calibration": calibration,
                      "clip_std": dict(zip(lmm.FEATURES, map(float, clip_std))),
                      "stages": rows}, indent=1))


if __name__ == "__main__":
    main()
