"""``svgen preprocess``: videos -> one ``aligned.zip`` (one clip per continuous face segment).

Runs the per-video pass of :mod:`svgen.preprocessing.pipeline` over every input, in this process
(``--workers 1``) or in worker processes (:mod:`svgen.preprocessing.parallel`), optionally on one
shard of the input list.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

from svgen.preprocessing.dataset import AlignedDatasetWriter
from svgen.preprocessing.landmarks import LandmarkBackend, make_backend
from svgen.preprocessing.parallel import preprocess_parallel
from svgen.preprocessing.pipeline import (PreprocessConfig, VideoSummary, _Renderer, clip_bases,
                                          process_video)
from svgen.preprocessing.video_io import VideoInfo, probe
from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.shard import inputs_digest, shard_slice

__all__ = ["preprocess_videos", "format_summary"]


def preprocess_videos(videos: Sequence[PathLike], out: PathLike, size: int = 256, landmarks: str = "dlib",
                      smooth: float = 3.0, max_frames: Optional[int] = None, fps: Optional[float] = None,
                      show_progress: bool = True, backend: Optional[LandmarkBackend] = None,
                      shard: Optional[tuple[int, int]] = None, **options) -> dict:
    """Turn videos into one ``aligned.zip`` (one clip per continuous face segment); returns a summary.

    ``options`` are further :class:`PreprocessConfig` fields (``detector``, ``detect_every``,
    ``max_gap``, ``box``, ``device``, ``workers``, ``chunk_frames`` ...); ``backend`` reuses a loaded
    landmark backend (shared with forked workers). ``shard=(I, N)`` processes the I-th of N contiguous blocks
    of the inputs, named as in the whole run (``svgen merge-datasets`` joins the shards). Every
    input is checked before any work; on any error nothing is left under ``out``.
    """
    cfg = PreprocessConfig(size=int(size), landmarks=landmarks, smooth=float(smooth), max_frames=max_frames,
                           fps=fps, **options)
    cfg.validate()
    if not videos:
        raise SvgenError("no input videos given")
    all_paths = [Path(v) for v in videos]
    all_bases = clip_bases(all_paths)
    extra: dict = {}
    picked = range(len(all_paths))
    if shard is not None:
        picked = shard_slice(len(all_paths), shard)
        if not picked:
            raise SvgenError(f"--shard {shard[0]}/{shard[1]} selects no video: only {len(all_paths)} "
                             f"input(s) for {shard[1]} shards")
        extra["shard"] = {"index": shard[0], "count": shard[1], "inputs": len(all_paths),
                          "inputs_sha256": inputs_digest([str(p) for p in all_paths])}
    paths = [all_paths[k] for k in picked]
    bases = [all_bases[k] for k in picked]
    infos = [probe(p) for p in paths]  # fail fast on unreadable inputs
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("device", "workers", "render_threads")}
    settings["crop"] = "eye-corners" if cfg.landmarks != "none" else ("box" if cfg.box else "centre")
    extra["preprocess"] = settings
    t0 = time.perf_counter()
    with AlignedDatasetWriter(out, cfg.size, extra=extra) as writer:
        if cfg.workers > 1:
            summaries = preprocess_parallel(paths, infos, bases, set(all_bases), cfg, writer, show_progress,
                                            backend)
        else:
            summaries = _preprocess_here(paths, infos, bases, set(all_bases), cfg, writer, backend,
                                         show_progress)
    videos_out = [asdict(s) for s in summaries]
    return {
        "out": str(out),
        "resolution": cfg.size,
        "workers": cfg.workers,
        "shard": extra.get("shard"),
        "videos": videos_out,
        "frames": sum(s.frames for s in summaries),
        "kept": sum(s.kept for s in summaries),
        "interpolated": sum(s.interpolated for s in summaries),
        "dropped": sum(s.dropped for s in summaries),
        "clips": sum(len(s.clips) for s in summaries),
        "seconds": time.perf_counter() - t0,
    }


def _preprocess_here(paths: Sequence[Path], infos: Sequence[VideoInfo], bases: Sequence[str], all_bases: set,
                     cfg: PreprocessConfig, writer: AlignedDatasetWriter, backend: Optional[LandmarkBackend],
                     show_progress: bool) -> list[VideoSummary]:
    """Every video in this process, one after the other (``--workers 1``)."""
    if cfg.landmarks == "none":
        backend = None
    elif backend is None:
        backend = make_backend(cfg.landmarks, cfg.detector, cfg.device)
    summaries = []
    renderer = _Renderer(writer, cfg.size, workers=min(cfg.render_threads, os.cpu_count() or 1))
    try:
        for p, info, base in zip(paths, infos, bases):
            summaries.append(process_video(p, info, cfg, backend, renderer, base, all_bases, show_progress))
        renderer.drain()
    finally:
        renderer.close()
    return summaries


def format_summary(summary: dict) -> str:
    """Human-readable report of :func:`preprocess_videos` (one line per video plus a total)."""
    lines = []
    for v in summary["videos"]:
        segs = len(v["clips"])
        parts = [f"{v['kept']}/{v['frames']} frames kept", f"{v['interpolated']} interpolated",
                 f"{v['dropped']} dropped",
                 f"{segs} segment{'s' if segs != 1 else ''} "
                 f"({', '.join(f'{k}: {n}' for k, n in v['clips'].items())})"]
        if v["short_segments"]:
            parts.append(f"{v['short_segments']} too-short segment(s) dropped")
        parts.append(f"{v['frames'] / max(v['seconds'], 1e-9):.1f} frames/s")
        lines.append(f"{Path(v['source']).name}: " + ", ".join(parts))
    lines.append(f"total: {summary['kept']} frames in {summary['clips']} clip(s) at "
                 f"{summary['resolution']}x{summary['resolution']} -> {summary['out']}")
    return "\n".join(lines)
