"""``svgen preprocess --workers N``: processes over videos and over a long video's chunks.

A video of one chunk (``PreprocessConfig.chunk_frames``) is processed whole by one worker, in the
same streaming pass as ``--workers 1``. A longer video is processed in three steps:

1. *measure* (parallel): each chunk is decoded from its first frame (ffmpeg seeks to a keyframe before
   it where the file's frame times are exact, so a chunk's decoding does not grow with its position:
   ``video_io.seek_window``) and tracked by a fresh tracker,
   giving the raw crop parameters of every frame (the one-process pass restarts its tracker at the
   same frames, so the measurements are the same);
2. *stabilise* (here): the whole video's measurements go through one ``StreamingStabilizer``: gap
   filling, segment split and the zero-phase low-pass of centre, rotation and scale are exactly
   those of one pass, across chunk boundaries;
3. *render* (parallel): each chunk is decoded again and its kept frames are warped with their
   smoothed crops into a part zip, appended here in order.

Every worker writes its frames into a part zip in a temporary folder beside ``out``; the parts'
PNG bytes are copied into the dataset in input order, so the result is byte-for-byte the dataset of
``--workers 1`` (tested).
"""
from __future__ import annotations

import multiprocessing
import shutil
import tempfile
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

from svgen.preprocessing.alignment import quad_from_transform
from svgen.preprocessing.dataset import AlignedDatasetWriter, copy_clips
from svgen.preprocessing.landmarks import LandmarkBackend, make_backend
from svgen.preprocessing.pipeline import (PreprocessConfig, VideoSummary, _Renderer, add_tracker_stats,
                                          check_found, measure, new_tracker, output_frames, process_video,
                                          record_decision, stabilize_config)
from svgen.preprocessing.stabilize import StreamingStabilizer, transform_from_params
from svgen.preprocessing.video_io import VideoInfo, iter_frames_indexed
from svgen.utils.progress import progress

__all__ = ["preprocess_parallel", "chunk_grid"]

# landmark backends of this worker process, by (backend, detector, device): loaded once per process
_BACKENDS: dict = {}


def _backend(cfg: PreprocessConfig) -> Optional[LandmarkBackend]:
    if cfg.landmarks == "none":
        return None
    key = (cfg.landmarks, cfg.detector, cfg.device)
    if key not in _BACKENDS:
        _BACKENDS[key] = make_backend(*key)
    return _BACKENDS[key]


def chunk_grid(total: int, cfg: PreprocessConfig) -> list[tuple[int, Optional[int]]]:
    """[start, stop) output-frame ranges of a video of about ``total`` frames; the last is open-ended
    (the frame count of a header can be short), and ``--landmarks none`` is never chunked."""
    size = cfg.chunk_frames
    n = max(1, -(-int(total) // size)) if cfg.landmarks != "none" else 1
    return [(c * size, (c + 1) * size if c + 1 < n else None) for c in range(n)]


def _frames(path: Path, info: VideoInfo, cfg: PreprocessConfig, start: int, stop: Optional[int]):
    limit = cfg.max_frames
    count = None if stop is None else stop - start
    if limit is not None:
        count = max(0, limit - start) if count is None else max(0, min(count, limit - start))
    if count == 0:
        return iter(())
    return iter_frames_indexed(path, fps=cfg.fps, max_frames=count, info=info, start=start)


# -- worker tasks (run in the pool's processes) ----------------------------------------------------
def _video_task(path: Path, info: VideoInfo, cfg: PreprocessConfig, base: str, bases: set,
                part: str) -> tuple[VideoSummary, Optional[str]]:
    """A whole video, one streaming pass, into the part zip ``part``."""
    with AlignedDatasetWriter(part, cfg.size) as writer:
        renderer = _Renderer(writer, cfg.size, workers=1)
        try:
            summary = process_video(path, info, cfg, _backend(cfg), renderer, base, bases, False)
            renderer.drain()
        finally:
            renderer.close()
    return summary, part


def _measure_task(path: Path, info: VideoInfo, cfg: PreprocessConfig, start: int,
                  stop: Optional[int]) -> tuple[list, dict, float]:
    """Raw crop parameters (or None) of the chunk's frames, tracked from a fresh detection."""
    t0 = time.perf_counter()
    stab_cfg = stabilize_config(cfg, float(cfg.fps or info.fps))
    backend = _backend(cfg)
    params, stats, tracker = [], {}, None
    for i, (_, frame) in enumerate(_frames(path, info, cfg, start, stop), start=start):
        if tracker is None or i % cfg.chunk_frames == 0:
            if tracker is not None:
                add_tracker_stats(stats, tracker.stats)
            tracker = new_tracker(backend, cfg, stab_cfg)
        params.append(measure(tracker, frame))
    if tracker is not None:
        add_tracker_stats(stats, tracker.stats)
    return params, stats, time.perf_counter() - t0


def _render_task(path: Path, info: VideoInfo, cfg: PreprocessConfig, start: int, plan: list,
                 part: str) -> tuple[Optional[str], float]:
    """Warp the chunk's kept frames (``plan``: per frame None or (clip, quad, detected)) into ``part``."""
    t0 = time.perf_counter()
    fps_out = float(cfg.fps or info.fps)
    if not any(plan):
        return None, time.perf_counter() - t0
    with AlignedDatasetWriter(part, cfg.size) as writer:
        renderer = _Renderer(writer, cfg.size, workers=1)
        try:
            seen: set = set()
            for k, (src, frame) in enumerate(_frames(path, info, cfg, start, start + len(plan))):
                if plan[k] is None:
                    continue
                name, quad, detected = plan[k]
                new_clip = None if name in seen else (str(path), fps_out)
                seen.add(name)
                renderer.submit(name, new_clip, frame, quad, src, detected)
            renderer.drain()
        finally:
            renderer.close()
    return part, time.perf_counter() - t0


# -- the parent ------------------------------------------------------------------------------------
def _stabilise(path: Path, info: VideoInfo, cfg: PreprocessConfig, base: str, bases: set,
               measured: list) -> tuple[VideoSummary, list[list]]:
    """One stabiliser pass over every chunk's measurements -> the summary and per-chunk render plans."""
    fps_out = float(cfg.fps or info.fps)
    stab_cfg = stabilize_config(cfg, fps_out)
    stab = StreamingStabilizer(stab_cfg)
    summary = VideoSummary(source=str(path), fps=fps_out)
    decisions, found = [], 0
    for params, stats, seconds in measured:
        add_tracker_stats(summary.tracker, stats)
        summary.seconds += seconds
        for p in params:
            found += p is not None
            decisions += stab.push(p)
            summary.frames += 1
    decisions += stab.flush()
    summary.short_segments = stab.short_segments
    entries = []
    for d in decisions:
        name = record_decision(summary, d, base, bases)
        entries.append(None if name is None else
                       (name, quad_from_transform(*transform_from_params(d.params)), d.detected))
    check_found(summary, found, stab_cfg.min_length, path)
    plans, at = [], 0
    for params, _, _ in measured:
        plans.append(entries[at:at + len(params)])
        at += len(params)
    return summary, plans


def _context(cfg: PreprocessConfig, backend: Optional[LandmarkBackend]):
    """Fork where the platform has it: the workers start at once and share the landmark model this
    process loaded (~1.5 CPU-s less per worker than a fresh interpreter). Spawn elsewhere, and for
    the face-alignment backend (torch, possibly CUDA, which a forked child cannot use)."""
    if "fork" not in multiprocessing.get_all_start_methods() or cfg.landmarks not in ("dlib", "none"):
        return multiprocessing.get_context("spawn")
    if cfg.landmarks == "dlib":
        _BACKENDS[(cfg.landmarks, cfg.detector, cfg.device)] = backend or _backend(cfg)
    return multiprocessing.get_context("fork")


def preprocess_parallel(paths: Sequence[Path], infos: Sequence[VideoInfo], bases: Sequence[str],
                        all_bases: set, cfg: PreprocessConfig, writer: AlignedDatasetWriter,
                        show_progress: bool, backend: Optional[LandmarkBackend] = None) -> list[VideoSummary]:
    """Every video on ``cfg.workers`` processes; the dataset is written here, in input order."""
    tmp = Path(tempfile.mkdtemp(prefix=".svgen-parts-", dir=writer.path.parent))
    pool = ProcessPoolExecutor(max_workers=cfg.workers, mp_context=_context(cfg, backend))
    grids = [chunk_grid(output_frames(info, cfg), cfg) for info in infos]
    bar = progress(total=sum(output_frames(i, cfg) for i in infos) or None, desc="preprocess", unit="frame",
                   disable=not show_progress or None)
    try:
        jobs: list = []
        for k, (p, info, base, grid) in enumerate(zip(paths, infos, bases, grids)):
            if len(grid) == 1:
                jobs.append(pool.submit(_video_task, p, info, cfg, base, all_bases, str(tmp / f"v{k}.zip")))
            else:
                jobs.append([pool.submit(_measure_task, p, info, cfg, a, b) for a, b in grid])
        summaries = []
        for k, (p, info, base, grid, job) in enumerate(zip(paths, infos, bases, grids, jobs)):
            if isinstance(job, Future):
                summary, part = job.result()
                _append(writer, part, continue_last=False)
            else:
                summary, plans = _stabilise(p, info, cfg, base, all_bases, [f.result() for f in job])
                renders = [pool.submit(_render_task, p, info, cfg, a, plan, str(tmp / f"v{k}_c{c}.zip"))
                           for c, ((a, _), plan) in enumerate(zip(grid, plans))]
                for f in renders:
                    part, seconds = f.result()
                    summary.seconds += seconds
                    _append(writer, part, continue_last=True)
            summaries.append(summary)
            bar.update(summary.frames)
        return summaries
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        bar.close()
        pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(tmp, ignore_errors=True)
        _BACKENDS.clear()   # the workers are gone; this process keeps no model beyond the call


def _append(writer: AlignedDatasetWriter, part: Optional[str], continue_last: bool) -> None:
    if part is None:
        return
    copy_clips(writer, part, continue_last=continue_last)
    Path(part).unlink()
