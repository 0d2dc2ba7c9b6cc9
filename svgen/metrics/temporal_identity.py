"""Temporal identity consistency of an (edited) video: STIT's TL-ID and TG-ID with dlib embeddings.

STIT (Tzaban et al. 2022) measures whether an edited video keeps one identity over time:
- TL-ID (temporally local): mean identity similarity of *adjacent* frames;
- TG-ID (temporally global): mean identity similarity over *all pairs* of frames;
each divided by the same quantity for the unedited source, so 1 means "as consistent as the
source" and values below 1 mean flicker (TL) or drift (TG). STIT uses ArcFace; ArcFace weights are
not available here, so the similarity is the cosine between dlib's 128-d face-recognition
embeddings (:class:`svgen.metrics.acd.FaceEmbedder`). Measured on MEAD clips (30 frames, 256 px):
the same person's frames have cosine ~0.99, two different people 0.86-0.91, so dlib's cosine is
compressed towards 1 and a spliced-in second person lowers TG-ID by a few hundredths per tenth of
the pairs it spoils. Without a source video the raw similarities are reported (``normalised: false``).

Frames where dlib finds no face are left out (pairs that involve them are skipped); square frames
(aligned crops such as ``svgen animate`` output) fall back to the fixed FFHQ face box instead.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np

from svgen.metrics.acd import FaceEmbedder
from svgen.utils.errors import SvgenError


def frame_embeddings(frames: Iterable[np.ndarray], embedder: FaceEmbedder) -> list[Optional[np.ndarray]]:
    """Unit-norm dlib embedding of every frame (None where no face was found)."""
    out: list[Optional[np.ndarray]] = []
    for f in frames:
        e = embedder.embed(f, aligned=f.shape[0] == f.shape[1])
        out.append(None if e is None else e / np.linalg.norm(e))
    return out


def similarities(emb: Sequence[Optional[np.ndarray]]) -> dict:
    """Mean cosine of adjacent frames (``local``) and of all pairs (``global``), faces only."""
    idx = [i for i, e in enumerate(emb) if e is not None]
    if len(idx) < 2:
        raise SvgenError(f"TL-ID/TG-ID need a face in at least 2 frames, found {len(idx)} of {len(emb)}")
    e = np.stack([emb[i] for i in idx])
    cos = e @ e.T
    adjacent = [cos[k, k + 1] for k in range(len(idx) - 1) if idx[k + 1] == idx[k] + 1]
    iu = np.triu_indices(len(idx), k=1)
    return {"local": float(np.mean(adjacent)) if adjacent else float("nan"), "global": float(cos[iu].mean()),
            "adjacent_pairs": len(adjacent), "pairs": int(len(iu[0])), "frames": len(emb),
            "frames_with_face": len(idx)}


def temporal_identity(frames: Sequence[np.ndarray], source: Optional[Sequence[np.ndarray]] = None,
                      embedder: Optional[FaceEmbedder] = None) -> dict:
    """TL-ID and TG-ID of ``frames`` (RGB uint8), normalised by ``source`` (the unedited video) if given."""
    embedder = embedder or FaceEmbedder()
    video = similarities(frame_embeddings(frames, embedder))
    res = {"tl_id": video["local"], "tg_id": video["global"], "normalised": False, "video": video,
           "similarity": "cosine of 128-d dlib face-recognition embeddings", "embedder": embedder.describe()}
    if source is not None:
        ref = similarities(frame_embeddings(source, embedder))
        res.update(tl_id=video["local"] / ref["local"], tg_id=video["global"] / ref["global"], normalised=True,
                   source=ref)
    return res
