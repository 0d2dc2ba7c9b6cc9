"""Motion transfer to people the models never saw, judged by the demo's own checks; printed as JSON.

For a trained work folder (``make demo`` or the Makefile chain: ``image/generator.pt``, ``encoder/``,
``encoder_w/``, ``motion_gru/``, ``motion_styleinv/``, ``aligned.zip``), every held-out photo is animated
with each motion model by ``svgen animate`` (default settings: PTI on the photo, mean offset), and one
photo is also driven by another person's real video (``--driving``, given the GRU's ``--motion`` for its
training store, so the driving mouth comes from the driving frames' landmarks). Each animation gets the checks of
the demo's results page (``svgen.demo.targets.animation_checks``): mouth spread and landmark-motion FD
against the training clip (the driving video for the driven one), a face in every sampled frame and dlib identity distance to the photo.
The default photos are held out from every test: three colour photos (``jackson.jpg`` an older man) and a greyscale
portrait made at run time (``--grey``: a greyscale copy of a fourth held-out photo, written to the output folder;
none of the shared photos is greyscale).

Run: ``.venv/bin/python benchmarks/transfer.py --work demo [--frames 100] [--photos a.jpg b.png]``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = Path(os.environ.get("SVGEN_SHARED", REPO.parent / "shared")).resolve()
PHOTOS = ["photos/deep3dfacerecon/000031.jpg", "photos/deep3dfacerecon/015259.jpg",
          "photos/hyperstyle_aligned/jackson.jpg"]
GREY = "photos/hyperstyle_aligned/downey.jpg"         # animated as a greyscale copy
DRIVING = "videos/dreamtalk_mead/W011_front_happy_level3_001.mp4"


def animate(work: Path, out: Path, photo: Path, model: str, frames: int | None, driving: Path | None,
            extra: tuple = ()) -> float:
    """``svgen animate`` into ``out`` (``extra``: more of its options); returns its wall time in seconds.
    ``frames`` None with ``driving``: as many frames as the driving video has."""
    enc = work / ("encoder_w" if model == "styleinv" else "encoder") / "encoder.pt"
    args = ["animate", "--identity", str(photo), "--generator", str(work / "image/generator.pt"),
            "--encoder", str(enc), "--out", str(out)]
    if driving is not None:   # the motion's training store gives the generator's mouth direction (--driving-mouth)
        args += ["--driving", str(driving), "--motion", str(work / f"motion_{model}/motion.pt")]
        if frames is not None:
            args += ["--frames", str(frames)]
    else:
        args += ["--motion", str(work / f"motion_{model}/motion.pt"), "--frames", str(frames), "--fps", "25"]
    args += list(extra)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "svgen.cli.main", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def greyscale_copy(photo: Path, out: Path) -> Path:
    """``<out>/<stem>_grey.png``: the photo's luminance in all three channels (an old black-and-white portrait)."""
    from PIL import Image

    dst = out / f"{photo.stem}_grey.png"
    with Image.open(photo) as im:
        im.convert("L").convert("RGB").save(dst)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=REPO / "demo", help="trained work folder")
    ap.add_argument("--photos", nargs="*", type=Path, default=[SHARED / "data" / p for p in PHOTOS])
    ap.add_argument("--grey", type=Path, default=SHARED / "data" / GREY,
                    help="photo animated as a greyscale copy (give '' to skip)")
    ap.add_argument("--driving", type=Path, default=SHARED / "data" / DRIVING)
    ap.add_argument("--frames", type=int, default=100,
                    help="frames of each animation (the driven one: at most the driving video's)")
    ap.add_argument("--out", type=Path, default=None, help="folder for the animations (default WORK/transfer)")
    ap.add_argument("--models", nargs="*", default=["gru", "styleinv"], help="motion models to animate with")
    ap.add_argument("--animate-options", default="", help="more `svgen animate` options, e.g. '--motion-layers 0-5'")
    args = ap.parse_args()

    from svgen.demo import targets
    from svgen.metrics import landmark_motion as lmm
    from svgen.metrics.acd import FaceEmbedder
    from svgen.preprocessing.video_io import probe
    from svgen.stage1_image_gan.checkpoints import load_generator

    work, out = args.work, args.out or args.work / "transfer"
    out.mkdir(parents=True, exist_ok=True)
    size = load_generator(work / "image/generator.pt").img_resolution
    train_motion = lmm.dataset_features(work / "aligned.zip")
    embedder = FaceEmbedder()
    photos = list(args.photos)
    if args.grey and args.grey.is_file():
        photos.append(greyscale_copy(args.grey, out))
    jobs = [(p, m, None) for p in photos for m in args.models if (work / f"motion_{m}").is_dir()]
    if args.driving and args.driving.is_file() and args.photos:
        jobs.append((args.photos[0], "driving", args.driving))
    rows = []
    for photo, model, driving in jobs:
        video = out / f"{photo.stem}_{model}.mp4"
        # the driven animation: at most as long as the driving video (animate refuses more frames than it has)
        frames = args.frames if driving is None or args.frames < probe(driving).num_frames else None
        seconds = animate(work, video, photo, "gru" if model == "driving" else model, frames, driving,
                          tuple(shlex.split(args.animate_options)))
        # a driven animation should move like its driving video, a sampled one like the training clip
        reference = [lmm.video_features(driving)] if driving is not None else train_motion
        checks = targets.animation_checks(model, video, photo, reference, embedder, size)
        rows.append({"photo": photo.name, "model": model, "animate_seconds": round(seconds, 1),
                     "met": sum(c.ok for c in checks), "total": len(checks),
                     "checks": [asdict(c) for c in checks]})
        print(f"{photo.name:>16} {model:>8}: " + ", ".join(
            f"{c.key.split('_')[0]} {c.value:.3g}{'' if c.ok else ' BAD'}" for c in checks), file=sys.stderr)
    print(json.dumps({"work": str(work), "frames": args.frames, "animate_options": args.animate_options,
                      "results": rows}, indent=1))


if __name__ == "__main__":
    main()
