"""The demo's results page: ``index.html`` showing every stage's artifacts.

All links are relative, so the folder can be moved or served as is. A small inline script marks each
image and video as loaded or failed (``data-load="ok|error"``), which a person sees as a badge and
the tests read from the DOM of a headless browser.
"""
from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np

from svgen.metrics.plots import save_figure
from svgen.utils.errors import PathLike
from svgen.utils.io import atomic_path, atomic_write
from svgen.utils.logging import read_jsonl


def aligned_grid(aligned_zip: PathLike, out: PathLike, cols: int = 8, rows: int = 2) -> Path:
    """A PNG grid of evenly spaced aligned frames from ``aligned.zip``."""
    from svgen.preprocessing.dataset import AlignedDataset

    ds = AlignedDataset(aligned_zip)
    try:
        n = min(len(ds), cols * rows)
        idx = np.linspace(0, len(ds) - 1, n).round().astype(int)
        tiles = np.stack([ds[int(i)] for i in idx])
    finally:
        ds.close()
    return image_grid(tiles, out, cols=cols)


def plot_curves(logs: dict[str, Path], out: PathLike, keys_like: tuple = ("loss",)) -> Optional[Path]:
    """Plot every numeric series whose name contains one of ``keys_like`` from each JSONL log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for title, path in logs.items():
        if not Path(path).is_file():
            continue
        recs = read_jsonl(path)
        series: dict[str, list] = {}
        for i, r in enumerate(recs):
            for k, v in r.items():
                if isinstance(v, (int, float)) and any(s in k.lower() for s in keys_like):
                    series.setdefault(k, []).append((i, float(v)))
        if series:
            panels.append((title, series))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels):
        for k, pts in sorted(series.items()):
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=k, lw=1)
        ax.set_title(title)
        ax.set_xlabel("log record")
        ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, out, dpi=90)
    plt.close(fig)
    return Path(out)


def image_grid(images: np.ndarray, out: PathLike, cols: int = 8) -> Path:
    """A PNG grid of uint8 images [N, H, W, 3]."""
    from PIL import Image

    n, h, w, _ = images.shape
    rows = (n + cols - 1) // cols
    grid = np.full((rows * h, min(cols, n) * w, 3), 255, np.uint8)
    for k, t in enumerate(images):
        y, x = divmod(k, cols)
        grid[y * h:(y + 1) * h, x * w:(x + 1) * w] = t
    with atomic_path(out) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return Path(out)


_SCRIPT = """
<script>
function mark(el, ok) { el.dataset.load = ok ? "ok" : "error";
  const b = document.createElement("span"); b.className = "badge " + (ok ? "ok" : "bad");
  b.textContent = ok ? "loaded" : "failed to load"; el.insertAdjacentElement("afterend", b); }
window.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("img").forEach(img => {
    if (img.complete) mark(img, img.naturalWidth > 0);
    else { img.addEventListener("load", () => mark(img, img.naturalWidth > 0));
           img.addEventListener("error", () => mark(img, false)); } });
  document.querySelectorAll("video").forEach(v => {
    if (v.readyState >= 1) mark(v, v.videoWidth > 0);
    else { v.addEventListener("loadedmetadata", () => mark(v, v.videoWidth > 0));
           v.addEventListener("error", () => mark(v, false)); } });
});
</script>
"""

_STYLE = """
<style>
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
section { margin: 2em 0; } img, video { max-width: 100%; image-rendering: pixelated; border: 1px solid #ccc; }
video { width: 384px; } pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 12px; }
.badge { font-size: 11px; margin-left: .5em; padding: 1px 5px; border-radius: 3px; }
.ok { background: #d4f4d4; } .bad { background: #f4d4d4; }
table.verdict { border-collapse: collapse; font-size: 13px; } .verdict td, .verdict th { border: 1px solid #ccc;
  padding: 3px 6px; text-align: left; vertical-align: top; } td.good { background: #d4f4d4; font-weight: bold; }
td.BAD { background: #f4d4d4; font-weight: bold; } figure { display: inline-block; vertical-align: top; margin: .5em; }
</style>
"""


def _relative(path: PathLike, work: Path) -> str:
    """``path`` relative to ``work`` without following symlinks (the driving video in
    ``input/`` may be a link to the user's file elsewhere; the page links the link)."""
    return Path(os.path.abspath(path)).relative_to(os.path.abspath(work)).as_posix()


def build_index(work: PathLike, sections: list[dict], title: str = "svgen demo") -> Path:
    """Write ``<work>/index.html`` from sections: ``{"title", "text", "images": [...], "videos": [...],
    "json": path}``; media paths are made relative to ``work``."""
    work = Path(work)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             _STYLE, _SCRIPT, "</head><body>", f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        parts.append(f"<section><h2>{html.escape(s['title'])}</h2>")
        if s.get("text"):
            parts.append(f"<p>{html.escape(s['text'])}</p>")
        if s.get("table"):
            head, *rows = s["table"]
            parts.append("<table class='verdict'><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
                         + "</tr>")
            for row in rows:
                cells = [f"<td>{html.escape(c)}</td>" for c in row[:-1]]
                cells.append(f"<td class='{html.escape(row[-1])}'>{html.escape(row[-1])}</td>")
                parts.append("<tr>" + "".join(cells) + "</tr>")
            parts.append("</table>")
        for img in s.get("images", []):
            rel = _relative(img, work)
            parts.append(f"<figure><img src='{html.escape(rel)}' alt='{html.escape(Path(img).stem)}'>"
                         f"<figcaption>{html.escape(rel)}</figcaption></figure>")
        for vid in s.get("videos", []):
            rel = _relative(vid, work)
            parts.append(f"<figure><video src='{html.escape(rel)}' controls loop muted preload='metadata'>"
                         f"</video><figcaption><a href='{html.escape(rel)}'>{html.escape(rel)}</a>"
                         "</figcaption></figure>")
        if s.get("json"):
            p = Path(s["json"])
            rel = _relative(p, work)
            text = json.dumps(json.loads(p.read_text()), indent=2)
            parts.append(f"<p><a href='{html.escape(rel)}'>{html.escape(rel)}</a></p>"
                         f"<pre>{html.escape(text)}</pre>")
        parts.append("</section>")
    parts.append("</body></html>")
    out = work / "index.html"
    with atomic_write(out, "w") as fh:
        fh.write("\n".join(parts))
    return out
