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
- ``<model> on <photo>, pti``: ``svgen animate``'s default (pivotal tuning with its motion and mouth terms,
  mean offset, coarse layers; ``--tune-mouth 0`` / ``--tune-motion 0`` for PTI without a term; the motion
  term's offsets are those of seed 0's motion, as animate's).

Besides the spreads, ``responses`` isolates the generator's side from the motion's: the slope of the
mouth aspect ratio when a code moves along the store's *mouth direction* (the least-squares direction
in its W+ codes that predicts the clip's mouth aspect ratio, fitted on 16 principal components,
restricted to the layers animate moves under pivotal tuning and scaled to the store's own spread along
it), per unit of that spread, divided by the clip's mouth spread. 1 means the generator opens the mouth
per unit of motion as much as the store's frames do; it is measured at the store's mean code (also
with the direction on every layer), and at each photo's pivot through the original and the
pivotal-tuned generator (the pivot of the first model that is there). Nine frames per row, no motion model.

``layers`` measures what a W motion (StyleInV's) carries on the layers that move: the store re-rendered
with only the layers of each ``--layer-sets`` entry moving (the rest at the store's mean code), as the
store moves them (``per layer``), as their mean over those layers placed on them (``mean within``: a W
motion on those layers, as animate under PTI renders StyleInV) and as that mean on every layer
(``mean everywhere``: a W motion broadcast, as ``svgen sample`` renders StyleInV).

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


def layer_rows(G, store: list, sets: list[tuple[str, list[int]]], backend, clip: list) -> list[dict]:
    """The store's clips [T, num_ws, w_dim] re-rendered with only each set's layers moving (the others at
    the store's mean code): per layer, as their mean within the set, and as that mean on every layer (see
    the module docstring). Each clip is measured on its own, as the ``store`` row is."""
    from svgen.stage2_motion.offset import hold_layers

    mean = np.concatenate(store).mean(0)
    out = []
    for label, layers in sets:
        per_kind: dict[str, list] = {"per layer": [], "mean within": [], "mean everywhere": []}
        for w in store:
            avg = np.repeat(w[:, layers].mean(1, keepdims=True), w.shape[1], axis=1)   # a W code per frame
            for kind, codes in (("per layer", hold_layers(w, mean, layers)),
                                ("mean within", hold_layers(avg, mean, layers)), ("mean everywhere", avg)):
                per_kind[kind].append(features(G, codes, backend))
        for kind, feats in per_kind.items():
            out.append({**row(f"store, layers {label}, {kind}", feats, clip),
                        "layers": [int(x) for x in layers], "kind": kind})
    return out


def mouth_response(G, base: np.ndarray, d: np.ndarray, sigma: float, mar_std: float, backend, name: str) -> dict:
    """Slope of the mouth aspect ratio of G(base + s d), s in [-2, 2] store spreads (9 frames), per
    spread and over the clip's mouth spread (see the module docstring)."""
    s = np.linspace(-2.0, 2.0, 9)
    codes = (base[None].astype(np.float64) + (s * sigma)[:, None, None] * d[None]).astype(np.float32)
    mar = features(G, codes, backend).values[:, 0]
    ok = np.isfinite(mar)
    slope = float(np.polyfit(s[ok], mar[ok], 1)[0]) / mar_std if ok.sum() >= 5 else None
    out = {"at": name, "response": None if slope is None else round(slope, 3), "faces": int(ok.sum())}
    text = "not measured (too few faces)" if slope is None else f"{slope:.2f}x the store's"
    print(f"{'mouth response at ' + name:>42}: {text}  faces {ok.sum()}/9", file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=REPO / "demo", help="trained work folder")
    ap.add_argument("--photos", nargs="*", type=Path,
                    default=None, help="photos to animate (default: the demo photo and two held-out ones)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--models", nargs="*", default=["gru", "styleinv"], help="motion models to follow")
    ap.add_argument("--calibration", choices=["on", "off"], default="off",
                    help="the motion model's spread calibration (svgen/stage2_motion/calibration.py; off, as "
                         "svgen animate)")
    ap.add_argument("--tune-mouth", type=float, default=None,
                    help="weight of PTI's mouth term (svgen animate --tune-mouth; 0: off; default: animate's)")
    ap.add_argument("--tune-motion", type=float, default=None,
                    help="weight of PTI's motion term (svgen animate --tune-motion; 0: off; default: animate's)")
    ap.add_argument("--layer-sets", nargs="*", default=["auto", "0-5", "all"],
                    help="layer sets for the `layers` rows, e.g. 0-5 or 0-3,6 (auto: the layers animate moves "
                         "under PTI; none given: no rows)")
    args = ap.parse_args()

    import h5py

    from svgen.inversion.api import invert_images
    from svgen.inversion.encoders import load_encoder
    from svgen.inversion.mouth import fit_mouth_direction
    from svgen.metrics import landmark_motion as lmm
    from svgen.pipeline.animate import (AnimateSettings, _motion_layers, _sampled_stream, motion_offsets,
                                        mouth_inputs, resolved_offset, resolved_tuning, tune_identity)
    from svgen.preprocessing.landmarks import DlibLandmarks
    from svgen.preprocessing.pipeline import align_photo
    from svgen.stage1_image_gan.checkpoints import load_generator
    from svgen.stage2_motion import load_motion
    from svgen.stage2_motion.calibration import use_calibration
    from svgen.stage2_motion.offset import hold_layers, parse_layers
    from svgen.utils.io import file_sha256

    if args.tune_mouth is None:
        args.tune_mouth = AnimateSettings().tune_mouth
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
    pti_layers = _motion_layers(AnimateSettings(identity="unused.png", out="unused.mp4", tune="pti"), G.num_ws,
                                G.img_resolution) or list(range(G.num_ws))
    sets = []
    for spec in args.layer_sets:
        try:
            layers = pti_layers if spec == "auto" else (parse_layers(spec, G.num_ws) or list(range(G.num_ws)))
        except ValueError as exc:
            sys.exit(f"mouth_chain: --layer-sets {spec!r}: {exc}")
        sets.append((f"{spec} ({layers[0]}-{layers[-1]})" if spec in ("auto", "all") else spec, layers))

    clip = lmm.dataset_features(work / "aligned.zip")
    clip_std = np.average([np.nanstd(s.filled(), axis=0) for s in clip], axis=0, weights=[len(s) for s in clip])
    print(f"{'training clip':>42}: mouth std {clip_std[0]:.4f} (1x)", file=sys.stderr)
    rows = []
    with h5py.File(work / "latents.h5", "r") as h:
        names = list(h["clips"])
        store = [np.asarray(h["clips"][k]["w"], np.float32) for k in names]
    rows.append(row("store", [features(G, w, backend) for w in store], clip))
    by_name = {s.name.rsplit(":", 1)[-1]: s.values[:, 0] for s in clip}   # mouth aspect ratio per clip
    all_codes = np.concatenate(store)
    mar = np.concatenate([by_name[k] for k in names])
    # the store's mouth direction on the clip's real mouth aspect ratio (animate fits it on the renders')
    mouth_fit, full_fit = (fit_mouth_direction(all_codes, mar, layers) for layers in (pti_layers, None))
    mouth_d, mouth_sigma = mouth_fit.direction, mouth_fit.spread
    full_d, full_sigma = full_fit.direction, full_fit.spread
    store_mean = all_codes.mean(0)
    responses = [mouth_response(G, store_mean, full_d, full_sigma, clip_std[0], backend,
                                "the store's mean, every layer"),
                 mouth_response(G, store_mean, mouth_d, mouth_sigma, clip_std[0], backend, "the store's mean")]

    layers_table = layer_rows(G, store, sets, backend, clip) if sets else []

    calibration, measured = {}, set()
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
                st = resolved_tuning(AnimateSettings(identity=str(photo), out="unused.mp4", tune=tune,
                                                     tune_mouth=args.tune_mouth, tune_motion=args.tune_motion))
                moving = _motion_layers(st, G.num_ws, G.img_resolution)
                offset = resolved_offset(st)
                if tune == "none":
                    render_G = G
                else:
                    offs = (motion_offsets(model, None, w_id, args.frames, 25.0, offset, st, None, moving)
                            if st.tune_motion > 0 else None)
                    mouth = (mouth_inputs(G, model, None, aligned, st, gen_sha, moving, motion=offs)[0]
                             if args.tune_mouth > 0 else None)
                    render_G = tune_identity(G, w_id, aligned, st, gen_sha, offsets=offs, mouth=mouth)[0]
                label = "pti" if tune == "pti" else "untuned"
                if (photo, tune) not in measured:    # once per photo: the pivot of the first model's encoder
                    measured.add((photo, tune))
                    responses.append(mouth_response(render_G, np.asarray(w_id), mouth_d, mouth_sigma, clip_std[0],
                                                    backend, f"{Path(photo).stem}, {label}"))
                per_seed = []
                for s in range(args.seeds):
                    seq = np.concatenate(list(_sampled_stream(model, w_id, args.frames, 25.0, s, offset, st,
                                                              None, [])))
                    per_seed.append(features(render_G, hold_layers(seq, w_id, moving), backend))
                rows.append(row(f"{name} on {Path(photo).stem}, {label}", per_seed, clip))
    print(json.dumps({"work": str(work), "frames": args.frames, "seeds": args.seeds, "calibration": calibration,
                      "clip_std": dict(zip(lmm.FEATURES, map(float, clip_std))),
                      "mouth_direction": {"layers": list(pti_layers), "store_spread": round(mouth_sigma, 3)},
                      "responses": responses, "layers": layers_table, "stages": rows}, indent=1))


if __name__ == "__main__":
    main()
