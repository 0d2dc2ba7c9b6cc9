"""``svgen convert`` and ``svgen generate-images``: generator import/export and image sampling."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Optional

import click

from svgen.cli.common import common_options, positive_int
from svgen.utils.checks import FINITE


def parse_seeds(text: str) -> list[int]:
    """'0-15' or '1,4,10-12' -> a list of non-negative ints (click.BadParameter otherwise)."""
    seeds: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise click.BadParameter(f"expected seeds like '0-15' or '1,4,10-12', got {text!r}",
                                     param_hint="--seeds")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise click.BadParameter(f"empty seed range {part!r}", param_hint="--seeds")
        seeds.extend(range(lo, hi + 1))
    if len(seeds) > 100000:
        raise click.BadParameter("at most 100000 seeds", param_hint="--seeds")
    return seeds


@click.command("convert")
@click.argument("checkpoint", type=click.Path(dir_okay=True, path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Output svgen generator.pt.")
@common_options
def convert(checkpoint: Path, out: Path, seed: int, device: str) -> None:
    """Convert CHECKPOINT to an svgen generator.pt.

    CHECKPOINT may be an NVIDIA stylegan2-ada-pytorch / stylegan3 (stylegan2 config) network
    .pkl, a rosinality stylegan2-pytorch .pt, or an svgen checkpoint (e.g. a training latest.pt,
    exported without optimizer state). The format is detected from the content; pickles are read
    as data, never executed. w_avg, constant noise buffers and the mapping depth are kept, so
    --noise-mode const reproduces the original network.
    """
    from svgen.stage1_image_gan.checkpoints import (build_networks, export_generator_checkpoint,
                                                    read_generator_checkpoint)
    from svgen.utils.io import ensure_parent_writable, torch_save_atomic
    from svgen.utils.progress import progress

    ensure_parent_writable(out)
    with progress(total=3, desc="convert", unit="step") as bar:
        bar.set_postfix_str("reading")
        ckpt = read_generator_checkpoint(checkpoint)
        bar.update(1)
        bar.set_postfix_str("verifying")
        _, G_ema, D = build_networks(ckpt, checkpoint)
        ckpt = export_generator_checkpoint(ckpt)
        bar.update(1)
        bar.set_postfix_str("writing")
        torch_save_atomic(ckpt, out)
        bar.update(1)
    meta = ckpt.get("meta", {})
    source = meta.get("source", "svgen")
    click.echo(f"{out}: {source} -> svgen-generator, {G_ema.img_resolution}x{G_ema.img_resolution}, "
               f"num_ws {G_ema.num_ws}, w_dim {G_ema.w_dim}, D {'included' if D is not None else 'absent'}")
    for key in ("G", "D", "w_avg"):
        if isinstance(meta.get(key), str):
            click.echo(f"note: {meta[key]}", err=True)


@click.command("generate-images")
@click.option("--generator", "generator", required=True, type=click.Path(path_type=Path),
              help="Generator: svgen generator.pt, NVIDIA .pkl or rosinality .pt.")
@click.option("--seeds", default="0-15", show_default=True, help="Seeds, e.g. '0-15' or '1,4,10-12'.")
@click.option("--trunc", "truncation_psi", type=FINITE, default=1.0, show_default=True,
              help="Truncation psi (1 = off).")
@click.option("--trunc-cutoff", type=int, default=None, callback=positive_int,
              help="Truncate only the first N ws.")
@click.option("--noise-mode", type=click.Choice(["const", "random", "none"]), default="const",
              show_default=True, help="Per-layer noise.")
@click.option("--class", "class_idx", type=int, default=None,
              help="Class index for a conditional generator.")
@click.option("--batch", type=int, default=8, show_default=True, callback=positive_int,
              help="Images per forward pass.")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="A .png path (one grid image) or a folder (one PNG per seed).")
@common_options
def generate_images(generator: Path, seeds: str, truncation_psi: float, trunc_cutoff: Optional[int],
                    noise_mode: str, class_idx: Optional[int], batch: int, out: Path, seed: int,
                    device: str) -> None:
    """Render images from seeds: a grid PNG (--out grid.png) or a folder of PNGs (--out DIR).

    Seed s uses z = RandomState(s).randn(z_dim), as NVIDIA's generate.py does, so an imported
    network gives the same images for the same seeds. --seed drives the random noise mode.
    """
    import numpy as np
    import torch

    from svgen.stage1_image_gan.checkpoints import load_generator
    from svgen.utils.device import select_device
    from svgen.utils.io import ensure_parent_writable
    from svgen.utils.progress import progress

    seed_list = parse_seeds(seeds)
    grid = out.suffix.lower() == ".png"
    if grid:
        ensure_parent_writable(out)
    else:
        ensure_parent_writable(out / "seed0000.png")
    dev = select_device(device)
    G = load_generator(generator, device=dev)
    c = None
    if G.c_dim > 0:
        if class_idx is None or not 0 <= class_idx < G.c_dim:
            raise click.BadParameter(f"this generator is conditional: give --class in [0, {G.c_dim})",
                                     param_hint="--class")
        c = torch.zeros([1, G.c_dim], device=dev)
        c[0, class_idx] = 1
    torch.manual_seed(seed)

    images: list[np.ndarray] = []
    with progress(total=len(seed_list), desc="generate", unit="img") as bar:
        for start in range(0, len(seed_list), batch):
            chunk = seed_list[start:start + batch]
            z = torch.from_numpy(np.stack([np.random.RandomState(s).randn(G.z_dim) for s in chunk]))
            z = z.to(dev, torch.float32)
            with torch.no_grad():
                img = G(z, None if c is None else c.repeat(len(chunk), 1),
                        truncation_psi=truncation_psi, truncation_cutoff=trunc_cutoff,
                        noise_mode=noise_mode)
            arr = (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy()
            for s, a in zip(chunk, arr):
                if grid:
                    images.append(a)
                else:
                    _write_png(out / f"seed{s:04d}.png", a)
            bar.update(len(chunk))
    if grid:
        _write_png(out, make_grid(images))
        click.echo(f"{out}: grid of {len(images)} images ({G.img_resolution} px)")
    else:
        click.echo(f"{out}: {len(seed_list)} images ({G.img_resolution} px)")


def make_grid(images: list, cols: Optional[int] = None):
    """Tile equally sized HxWxC uint8 images into a near-square grid (row-major)."""
    import numpy as np

    n = len(images)
    cols = cols or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    h, w, ch = images[0].shape
    canvas = np.zeros([rows * h, cols * w, ch], dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    return canvas


def _write_png(path: Path, array) -> None:
    from PIL import Image

    from svgen.utils.io import atomic_write

    with atomic_write(path, "wb") as fh:
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(fh, format="PNG")
