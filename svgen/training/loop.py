"""The outer loop of the step-counted trainers (encoder, GRU, StyleInV), written once.

Each trainer supplies ``step_fn`` (one optimisation step: data, losses, optimisers, EMA; it advances
the trainer's own step counter and returns the statistics to log) and ``snapshot`` (checkpoint plus its
metrics or samples); :func:`fit` calls them in the order every trainer used::

    while not done():
        stats = step_fn()
        progress bar; every log_every steps one log.jsonl record {step, sec_per_step, **stats}
        stop when done(); else every preview_every steps preview(), every snapshot_every steps snapshot(False)
    snapshot(True)

A resumed run starts from the trainer's restored step, so the cadences continue where they were.
Stage 1 keeps its own loop: it counts images (kimg), not steps, averages each phase's statistics over
the log interval and snapshots collectively on every process.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Optional

from svgen.training.run import Run
from svgen.utils.progress import progress


def fit(run: Run, step_fn: Callable[[], Mapping[str, Any]], position: Callable[[], int],
        done: Callable[[], bool], snapshot: Callable[[bool], None], *, total: int, log_every: int,
        snapshot_every: int, preview_every: int = 0, preview: Optional[Callable[[], None]] = None,
        postfix: Optional[Callable[[Mapping[str, Any]], dict]] = None, log_last: bool = False,
        reduce_stats: Optional[Callable[[Mapping[str, Any]], Mapping[str, Any]]] = None,
        desc: str = "train", show_progress: bool = True) -> None:
    """Run ``step_fn`` until ``done()``, logging, previewing and snapshotting at their cadences (in steps;
    0: never); ``position()`` is the trainer's step count, ``total`` the bar's length, ``log_last`` also
    logs the last step. ``reduce_stats`` runs on every process at the logged steps only (e.g. a
    data-parallel mean; it may be collective). Always ends with ``snapshot(True)``; the bar is closed
    on the way out."""
    start = position()
    bar = progress(total=total, initial=min(start, total), unit="step", desc=desc, disable=not show_progress)
    t_last, s_last = time.time(), start
    try:
        while not done():
            stats = step_fn()
            step = position()
            bar.update(1)
            finished = done()
            if (log_every and step % log_every == 0) or (log_last and finished):
                if reduce_stats is not None:
                    stats = reduce_stats(stats)
                now = time.time()
                run.log_step(step=step, sec_per_step=(now - t_last) / max(1, step - s_last), **stats)
                t_last, s_last = now, step
                if postfix is not None:
                    bar.set_postfix(**postfix(stats))
            if finished:
                break
            if preview_every and preview is not None and step % preview_every == 0:
                preview()
            if snapshot_every and step % snapshot_every == 0:
                snapshot(False)
        snapshot(True)
    finally:
        bar.close()
