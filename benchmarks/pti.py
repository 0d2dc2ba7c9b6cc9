"""Pivotal tuning cost and encoder quality on this machine, printed as JSON (never part of the tests).

- ``pti_seconds_per_photo``: seconds of one PTI run (350 steps, PTI's setting) on a real unseen photo,
  for the ``tiny`` preset at 64 px and ``paper256`` at 256 px. The paper256 figure is timed over
  ``--paper-steps`` steps and scaled to 350 (its networks are untrained: speed does not depend on
  training). With ``--generator`` a trained generator is used for the tiny row and the PSNR it
  reaches is reported too.
- ``encoder_psnr_vs_steps`` (with ``--generator`` and ``--data``): a W+ encoder (e4e training)
  trained against the generator on the first 80 % of each clip; mean PSNR of its reconstructions
  of the held-out 20 % after each number of steps in ``--encoder-steps``.

Run: ``.venv/bin/python benchmarks/pti.py [--generator G.pt --data aligned.zip]``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from svgen.inversion.pti import PTIConfig, pivotal_tuning  # noqa: E402

PHOTO = "data/photos/hyperstyle_aligned/pitt.jpg"


def _shared() -> Path:
    return Path(os.environ.get("SVGEN_SHARED", REPO.parent / "shared")).resolve()


def _photo(size: int) -> torch.Tensor:
    from PIL import Image

    img = Image.open(_shared() / PHOTO).convert("RGB").resize((size, size), Image.LANCZOS)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 127.5 - 1


def _untrained(preset: str, resolution: int) -> torch.nn.Module:
    from svgen.stage1_image_gan.networks import Generator
    from svgen.stage1_image_gan.presets import get_preset

    torch.manual_seed(0)
    return Generator(get_preset(preset, resolution).G).eval()


def pti_row(G: torch.nn.Module, steps: int) -> dict:
    """Seconds for ``steps`` PTI steps on the photo, scaled to PTI's 350; PSNR before/after."""
    x = _photo(G.img_resolution)
    pivot = G.mapping.w_avg.view(1, 1, -1).expand(1, G.num_ws, -1).clone()
    t0 = time.perf_counter()
    _, summary = pivotal_tuning(G, pivot, x, PTIConfig(steps=steps, stop_psnr=0.0))
    sec = time.perf_counter() - t0
    return {"resolution": G.img_resolution, "steps_timed": steps, "seconds_timed": round(sec, 2),
            "seconds_per_photo_350_steps": round(sec * 350 / steps, 1), "lr": summary["config"]["lr"],
            "psnr_before_db": round(summary["psnr_before"], 2), "psnr_after_db": round(summary["psnr_after"], 2)}


def encoder_curve(generator: Path, data: Path, steps: list[int]) -> list[dict]:
    """Held-out PSNR of a W+ encoder after each of ``steps`` (one run, snapshots by resuming)."""
    from svgen.inversion.api import invert_images
    from svgen.inversion.encoders import load_encoder
    from svgen.inversion.train import train_encoder
    from svgen.preprocessing.dataset import AlignedDataset, AlignedDatasetWriter
    from svgen.stage1_image_gan.checkpoints import load_generator

    G = load_generator(generator).eval()
    src = AlignedDataset(data)
    rows = []
    with tempfile.TemporaryDirectory(prefix="svgen-bench-") as tmp:
        train_zip, held = Path(tmp) / "train.zip", []
        with AlignedDatasetWriter(train_zip, src.resolution) as w:
            for name, info in src.clips.items():
                frames = src.read_clip(name)
                cut = int(len(frames) * 0.8)
                w.add_clip(name, source=info.source, fps=info.fps)
                for f in frames[:cut]:
                    w.add_frame(name, f)
                held.append(frames[cut:])
        held_frames = np.concatenate(held)
        out = Path(tmp) / "enc"
        for i, n in enumerate(steps):
            t0 = time.perf_counter()
            path = train_encoder(generator, out, train_zip, space="w+", preset="tiny", steps=n, seed=0,
                                 show_progress=False, resume=i > 0)
            sec = time.perf_counter() - t0
            ws = invert_images(G, load_encoder(path).eval(), held_frames)
            with torch.no_grad():
                rec = G.synthesis(torch.from_numpy(ws), noise_mode="const").clamp(-1, 1)
            x = torch.from_numpy(held_frames).permute(0, 3, 1, 2).float() / 127.5 - 1
            mse = ((rec - x) / 2).square().flatten(1).mean(1)
            rows.append({"steps": n, "held_out_psnr_db": round(float((-10 * torch.log10(mse)).mean()), 2),
                         "train_seconds": round(sec, 1)})
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def main(argv: Optional[list] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", type=Path, help="a trained tiny generator.pt (64 px)")
    ap.add_argument("--data", type=Path, help="its aligned.zip (for the encoder curve)")
    ap.add_argument("--paper-steps", type=int, default=5)
    ap.add_argument("--tiny-steps", type=int, default=350)
    ap.add_argument("--encoder-steps", default="250,500,1000,2000")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    from svgen.stage1_image_gan.checkpoints import load_generator

    tiny = load_generator(args.generator).eval() if args.generator else _untrained("tiny", 64)
    report = {"threads": torch.get_num_threads(), "photo": PHOTO,
              "pti_seconds_per_photo": {"tiny_64": pti_row(tiny, args.tiny_steps),
                                        "paper256_256": pti_row(_untrained("paper256", 256), args.paper_steps)}}
    if args.generator and args.data:
        report["encoder_psnr_vs_steps"] = encoder_curve(args.generator, args.data,
                                                        [int(s) for s in args.encoder_steps.split(",")])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
