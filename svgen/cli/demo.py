"""``svgen demo``: the whole pipeline on an embedded default input (or your own video and photo)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from svgen.cli.common import common_options
from svgen.utils.checks import POSITIVE, POSITIVE_INT


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo"),
              show_default=True, help="Folder for every intermediate artifact and index.html.")
@click.option("--video", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Your talking-head video (default: a procedural clip made from a photo shipped "
                   "with scikit-image).")
@click.option("--photo", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The new identity to animate (default: matplotlib's sample portrait).")
@click.option("--stage", type=click.Choice(["all", "input", "pipeline", "report"]), default="all",
              show_default=True, help="Run one part only (the Makefile's `demo` target uses this).")
@click.option("--no-styleinv", is_flag=True, help="Skip the StyleInV motion model.")
@click.option("--clip-frames", type=POSITIVE_INT, default=None, help="Length of the synthetic driving clip.")
@click.option("--image-kimg", type=POSITIVE, default=None, help="Stage-1 training length (kimg).")
@click.option("--print-make-vars", is_flag=True,
              help="Print the demo budget as Makefile variables and exit (used by `make demo`).")
@common_options
def demo(out: Path, video: Optional[Path], photo: Optional[Path], stage: str, no_styleinv: bool,
         clip_frames: Optional[int], image_kimg: Optional[float], print_make_vars: bool, seed: int,
         device: str) -> None:
    """Run preprocess -> train-image -> train-encoder -> invert -> train-motion -> animate and
    write OUT/index.html showing every stage. Steps whose artifact exists are skipped."""
    from svgen.demo.layout import DemoConfig, make_vars
    from svgen.pipeline.demo import run_demo
    from svgen.utils.config import replace

    cfg = replace(DemoConfig(), clip_frames=clip_frames, image_kimg=image_kimg)
    if print_make_vars:
        click.echo(make_vars(cfg))
        return
    if no_styleinv:
        cfg.styleinv = False
    result = run_demo(out, cfg, video=video, photo=photo, device=device, seed=seed, stage=stage)
    click.echo(str(result))
