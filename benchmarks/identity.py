"""dlib identity loss: where dlib's chip sits in an FFHQ crop, how close the fixed warp comes to dlib's
own detector + landmarks + chip pipeline, and the port's speed; printed as JSON.

- calibration (the source of ``DLIB_CHIP_IN_FFHQ``): on FFHQ-aligned photos, dlib's chip (HOG detector,
  5-point shapes, ``get_face_chip_details(shape, 150, 0.25)``) is sampled from images holding the x and
  y pixel coordinates, which gives the exact chip -> crop map; a similarity is fitted per photo and its
  side, centre and rotation are summarised over the photos;
- warp check: L2 distance between the embedding of the fixed-warp chip of a 256 px aligned image and
  dlib's descriptor from its own pipeline on the full-size image, for the calibration photos, two
  held-out FFHQ-aligned photos and photos aligned by ``svgen align-photo``;
- the PyTorch port's forward time per 150 px chip (CPU, batch 8, one thread unless OMP says more).

Run: ``.venv/bin/python benchmarks/identity.py``.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _photos(folder: str, pattern: str = "*.jp*g") -> list[Path]:
    shared = Path(os.environ.get("SVGEN_SHARED", REPO.parent / "shared")).resolve()
    return sorted((shared / "data" / "photos" / folder).glob(pattern))


def _load(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.LANCZOS))


def chip_similarity(img: np.ndarray, embedder) -> np.ndarray | None:
    """(a, b, tx, ty) with crop = [[a, -b], [b, a]] @ chip + t, both in units of their sides."""
    import dlib

    box = embedder.face_box(img)
    if box is None:
        return None
    details = dlib.get_face_chip_details(embedder.shape_predictor(img, box), 150, 0.25)
    h, w = img.shape[:2]
    xs = np.ascontiguousarray(np.broadcast_to(np.arange(w, dtype=np.float32), (h, w)))
    ys = np.ascontiguousarray(np.broadcast_to(np.arange(h, dtype=np.float32)[:, None], (h, w)))
    cx, cy = dlib.extract_image_chip(xs, details), dlib.extract_image_chip(ys, details)
    inner = slice(10, 140)   # away from the chip border
    c, r = np.meshgrid(np.arange(150.0), np.arange(150.0))
    px, py = ((c[inner, inner].ravel() + 0.5) / 150, (r[inner, inner].ravel() + 0.5) / 150)
    u, v = (cx[inner, inner].ravel() + 0.5) / w, (cy[inner, inner].ravel() + 0.5) / h
    one, zero = np.ones_like(px), np.zeros_like(px)
    A = np.concatenate([np.stack([px, -py, one, zero], 1), np.stack([py, px, zero, one], 1)])
    return np.linalg.lstsq(A, np.concatenate([u, v]), rcond=None)[0]


def calibrate(embedder) -> dict:
    fits = [f for f in (chip_similarity(_load(p, 512), embedder) for p in _photos("hyperstyle_aligned"))
            if f is not None]
    a, b, tx, ty = np.array(fits).T
    side = np.hypot(a, b)
    centre_x, centre_y = tx + (a - b) / 2, ty + (a + b) / 2
    stats = {"side": side, "centre_x": centre_x, "centre_y": centre_y, "rotation_deg": np.degrees(np.arctan2(b, a))}
    return {"photos": len(fits), **{k: {"mean": round(float(v.mean()), 4), "std": round(float(v.std()), 4)}
                                   for k, v in stats.items()}}


def warp_check(embedder, loss) -> dict:
    from svgen.preprocessing.pipeline import align_photo

    sets = {"hyperstyle_aligned (calibration)": [_load(p, 512) for p in _photos("hyperstyle_aligned")],
            "restyle_psp_aligned (held out)": [_load(p, 512) for p in _photos("restyle_psp_aligned")],
            "face_recognition via align_photo": [align_photo(p, size=512) for p in _photos("face_recognition")
                                                 if p.name != "two_people.jpg"]}
    out = {}
    for name, imgs in sets.items():
        d = []
        for img in imgs:
            ref = embedder.embed(img, aligned=True)
            x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 127.5 - 1
            x = torch.nn.functional.interpolate(x, size=(256, 256), mode="bilinear", antialias=True,
                                                align_corners=False)
            with torch.no_grad():
                d.append(float(np.linalg.norm(loss.embed(x)[0].double().numpy() - ref)))
        out[name] = {"photos": len(d), "mean": round(float(np.mean(d)), 3), "max": round(float(np.max(d)), 3)}
    return out


def forward_ms(net) -> float:
    x = torch.rand(8, 3, 150, 150) * 255
    best = float("inf")
    with torch.no_grad():
        for _ in range(3):
            t = time.perf_counter()
            net(x)
            best = min(best, (time.perf_counter() - t) / 8 * 1000)
    return round(best, 2)


def main() -> None:
    from svgen.inversion.identity import DLIB_CHIP_IN_FFHQ, DlibIdentityLoss, load_dlib_resnet
    from svgen.metrics.acd import FaceEmbedder

    embedder = FaceEmbedder(max_side=640)
    net = load_dlib_resnet()
    print(json.dumps({"chip_in_ffhq_crop": calibrate(embedder), "DLIB_CHIP_IN_FFHQ": DLIB_CHIP_IN_FFHQ,
                      "fixed_warp_vs_dlib_pipeline_L2": warp_check(embedder, DlibIdentityLoss(net)),
                      "forward_ms_per_chip_cpu": forward_ms(net), "threads": torch.get_num_threads()}, indent=1))


if __name__ == "__main__":
    main()
