"""``svgen evaluate``: parses its options into an :class:`svgen.metrics.evaluate.EvalSpec` and calls
:func:`svgen.metrics.evaluate.evaluate` (FVD/FID, ACD, latent FD, loop score, identity, landmark
motion, TL-/TG-ID and plots); prints the values and the report's path."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from svgen.cli.common import common_options, positive_int
from svgen.metrics.names import ALL_METRICS


@click.command("evaluate")
@click.option("--motion", type=click.Path(dir_okay=False, path_type=Path), help="Motion checkpoint (motion.pt).")
@click.option("--generator", type=click.Path(dir_okay=False, path_type=Path),
              help="Generator to render with (default: the one recorded in the motion checkpoint).")
@click.option("--latents", type=click.Path(dir_okay=False, path_type=Path),
              help="latents.h5 of the real clips (latent_fd).")
@click.option("--data", type=click.Path(dir_okay=False, path_type=Path),
              help="aligned.zip of the real clips (FVD, FID).")
@click.option("--metrics", default="auto", show_default=True,
              help=f"Comma list from {','.join(ALL_METRICS)}; 'auto' = all whose inputs are given.")
@click.option("--num-videos", type=int, default=2048, show_default=True, callback=positive_int,
              help="Generated videos for FVD (StyleGAN-V: 2048); also caps the loop/ACD video counts.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Report JSON to write.")
@click.option("--num-runs", type=int, default=1, show_default=True, callback=positive_int,
              help="Compute every metric K times (seeds SEED .. SEED+K-1): mean in values, std in values_std.")
@click.option("--detector-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder with i3d_torchscript.pt / inception-2015-12-05.pt (also $SVGEN_DETECTORS).")
@click.option("--plot", "plot_run", type=click.Path(exists=False, path_type=Path),
              help="Run directory whose metrics.jsonl is charted into RUNDIR/plots/*.png.")
@click.option("--sqrt", "sqrt_method", type=click.Choice(["sqrtm", "svd"]), default="sqrtm", show_default=True,
              help="Matrix square root of the Fréchet distance (StyleGAN-V: sqrtm, StyleInV: svd).")
@click.option("--real-sampling", type=click.Choice(["per-video", "windows"]), default="per-video",
              show_default=True, help="FVD real clips: StyleGAN-V's one per video, or random windows "
                                      "(for datasets of a few long clips).")
@click.option("--max-real", type=int, default=2048, show_default=True, callback=positive_int,
              help="Most real clips for FVD.")
@click.option("--fid-frames", type=int, default=50000, show_default=True, callback=positive_int,
              help="Generated frames for FID (from 16-frame videos).")
@click.option("--fid-max-real", type=int, default=None, callback=positive_int,
              help="Cap on real frames for FID (default: all frames, as fid50k_full).")
@click.option("--acd-videos", type=int, default=32, show_default=True, callback=positive_int)
@click.option("--acd-frames", type=int, default=16, show_default=True, callback=positive_int)
@click.option("--window", type=int, default=None, callback=positive_int,
              help="Training window (latent FD window and loop-score minimum lag); default: the model's.")
@click.option("--loop-frames", type=int, default=None, callback=positive_int,
              help="Length of the trajectories for the loop score (default max(256, 8 x window)).")
@click.option("--latent-windows", type=int, default=256, show_default=True, callback=positive_int,
              help="Real and fake windows for latent_fd.")
@click.option("--batch", type=int, default=None, callback=positive_int, help="Detector batch (clips or images).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Real-statistics cache (default $SVGEN_CACHE/metrics or ~/.cache/svgen/metrics).")
@click.option("--no-cache", is_flag=True, help="Do not read or write cached real statistics.")
@click.option("--animation", type=click.Path(dir_okay=False, path_type=Path),
              help="An animate result (mp4) to compare with --identity (metric 'identity') "
                   "or with --real-video (landmark_motion).")
@click.option("--identity", type=click.Path(dir_okay=False, path_type=Path), help="The photo it was made from.")
@click.option("--identity-frames", type=int, default=None, callback=positive_int,
              help="Score this many evenly spaced frames of --animation (default: all; tl_id/tg_id: the "
                   "first N frames of it and of the source).")
@click.option("--real-video", "real_videos", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Real reference for landmark_motion: a video or an aligned.zip (repeatable; default --data); "
                   "for tl_id/tg_id the first one is the unedited source they are normalised by.")
@click.option("--landmark-samples", type=int, default=4, show_default=True, callback=positive_int,
              help="landmark_motion with --motion: rendered samples (at the real videos' frame rate).")
@click.option("--landmark-frames", type=int, default=128, show_default=True, callback=positive_int,
              help="landmark_motion with --motion: frames per rendered sample.")
@click.option("--landmark-window", type=int, default=16, show_default=True, callback=positive_int,
              help="landmark_motion: frames per window of the landmark Fréchet distance.")
@click.option("--landmark-plot", type=click.Path(dir_okay=False, path_type=Path),
              help="landmark_motion: PNG of the feature curves, real vs generated.")
@common_options
def evaluate(**options: Any) -> None:
    """Evaluate a motion model (and/or an animation) and write a JSON report with protocols.

    \b
    svgen evaluate --motion motion.pt --latents latents.h5 --data aligned.zip \\
        --metrics fvd16,fvd128,fid,acd,latent_fd,loop --num-videos 2048 --out report.json
    svgen evaluate --plot runs/motion          # PNG charts of metrics.jsonl only
    svgen evaluate --metrics landmark_motion --animation out.mp4 --real-video talk.mp4 --out lm.json
    """
    from svgen.metrics.evaluate import EvalSpec, EvaluateUsageError, evaluate as run_evaluate

    spec = EvalSpec(**options)          # one field per option, same names
    try:
        report = run_evaluate(spec, say=lambda msg: click.echo(f"svgen evaluate: {msg}", err=True))
    except EvaluateUsageError as exc:
        if exc.param:
            raise click.BadParameter(exc.message, param_hint=exc.param) from None
        raise click.UsageError(exc.message) from None
    if spec.out is not None:
        for name, value in report["values"].items():
            shown = f"{value:.6g}" if isinstance(value, float) and math.isfinite(value) else value
            std = report.get("values_std", {}).get(name)
            click.echo(f"{name}: {shown}" + (f" ± {std:.3g} ({spec.num_runs} runs)" if std is not None else ""))
        click.echo(f"report: {spec.out}")
