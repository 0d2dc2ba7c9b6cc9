"""PNG charts of metrics over training snapshots, read from a run directory's ``metrics.jsonl``.

Each JSON line is one snapshot (``RunDir.metrics.log(step=..., latent_fd=..., loop_score=...)``).
Nested dicts are flattened (``loop.loop_score``). The x axis is the first of ``kimg``, ``step``,
``epoch``, ``iteration``, ``snapshot`` present in the records, else the snapshot number. One chart per
numeric metric plus an overview grid, written atomically (matplotlib's Agg canvas, no global
pyplot state).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Optional

from svgen.utils.errors import PathLike, SvgenError
from svgen.utils.io import atomic_path
from svgen.utils.logging import read_jsonl

X_KEYS = ("kimg", "step", "epoch", "iteration", "snapshot")
SKIP_KEYS = {"time"}


def _flatten(record: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in record.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, bool):
            continue
        elif isinstance(v, (int, float)) and math.isfinite(float(v)):
            out[key] = float(v)
    return out


def metric_series(records: list[dict]) -> tuple[str, dict[str, tuple[list, list]]]:
    """(x label, {metric: (xs, ys)}) from metrics.jsonl records."""
    flat = [_flatten(r) for r in records]
    x_key = next((k for k in X_KEYS if any(k in r for r in flat)), None)
    series: dict[str, tuple[list, list]] = {}
    for i, r in enumerate(flat):
        x = r.get(x_key, float(i)) if x_key else float(i)
        for k, v in r.items():
            if k in SKIP_KEYS or k == x_key or k in X_KEYS:
                continue
            xs, ys = series.setdefault(k, ([], []))
            xs.append(x)
            ys.append(v)
    return (x_key or "snapshot"), series


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def save_figure(fig, path: PathLike, dpi: int = 100) -> Path:
    """Write a matplotlib figure as PNG atomically (works for pyplot and bare ``Figure`` objects)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if fig.canvas is None or not hasattr(fig.canvas, "print_png"):
        FigureCanvasAgg(fig)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(path)


def plot_run_metrics(run_dir: PathLike, out_dir: Optional[PathLike] = None) -> list[Path]:
    """Write ``<out_dir>/<metric>.png`` for every metric and ``overview.png``; returns the paths.

    ``out_dir`` defaults to ``<run_dir>/plots``. SvgenError when there is no metrics.jsonl or it
    holds no numeric metric.
    """
    from matplotlib.figure import Figure

    run_dir = Path(run_dir)
    src = run_dir / "metrics.jsonl" if run_dir.is_dir() else run_dir
    if not src.is_file():
        raise SvgenError("no metrics.jsonl found (is this a training run directory?)", src)
    try:
        records = read_jsonl(src)
    except (OSError, UnicodeDecodeError) as exc:
        raise SvgenError(f"cannot read metrics ({exc})", src) from None
    x_label, series = metric_series(records)
    if not series:
        raise SvgenError("metrics.jsonl holds no numeric metrics", src)
    out_dir = Path(out_dir) if out_dir is not None else src.parent / "plots"
    paths = []
    for name, (xs, ys) in sorted(series.items()):
        fig = Figure(figsize=(6, 4))
        ax = fig.add_subplot(1, 1, 1)
        ax.plot(xs, ys, marker="o", markersize=3)
        ax.set_xlabel(x_label)
        ax.set_ylabel(name)
        ax.set_title(f"{name} ({run_dir.name})")
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"{_safe(name)}.png"
        save_figure(fig, path)
        paths.append(path)
    cols = min(3, len(series))
    rows = math.ceil(len(series) / cols)
    fig = Figure(figsize=(4 * cols, 3 * rows))
    for i, (name, (xs, ys)) in enumerate(sorted(series.items())):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.plot(xs, ys, marker="o", markersize=2)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(x_label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    overview = out_dir / "overview.png"
    save_figure(fig, overview)
    paths.append(overview)
    return paths
