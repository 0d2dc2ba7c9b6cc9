"""``svgen directions`` and the ``--edit`` option shared by animate, sample and reconstruct."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import click

from svgen.cli.common import common_options, positive_int
from svgen.utils.checks import FINITE, NON_NEGATIVE, POSITIVE, FiniteFloat
from svgen.utils.errors import SvgenError

EDIT_HELP = ("Latent edit FILE:INDEX:STRENGTH[:layers=A-B][:ramp=A-B] (repeatable): direction INDEX of a "
             "directions file (svgen directions, GANSpace, InterFaceGAN .pt/.npy) times STRENGTH (in sigmas "
             "when the file has them) on W+ rows A-B, constant or ramping in from frame A to B.")


def _parse_edits(ctx: click.Context, param: click.Parameter, value: tuple) -> list:
    """click callback: each ``--edit`` parsed (syntax errors are usage errors, exit 2)."""
    from svgen.editing.edits import parse_edit

    try:
        return [parse_edit(v) for v in value or ()]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def edit_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--edit`` (repeatable; the command receives a list of EditSpec as ``edits``)."""
    return click.option("--edit", "edits", multiple=True, callback=_parse_edits, help=EDIT_HELP)(func)


@click.command("directions")
@click.option("--generator", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="generator.pt (or an NVIDIA .pkl / rosinality .pt).")
@click.option("--method", type=click.Choice(["ganspace"]), default="ganspace", show_default=True,
              help="GANSpace: principal directions of the generator's W.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="dirs.pt to write (plus dirs.png: each direction at -k..+k sigma).")
@click.option("--num", type=int, default=20, show_default=True, callback=positive_int,
              help="Directions to keep (by decreasing variance).")
@click.option("--samples", type=int, default=100_000, show_default=True, callback=positive_int,
              help="Mapped z samples for the covariance.")
@click.option("--sigma", "span", type=POSITIVE, default=2.0, show_default=True,
              help="Preview: strengths from -SIGMA to +SIGMA standard deviations.")
@click.option("--columns", "steps", type=int, default=5, show_default=True, callback=positive_int,
              help="Preview: columns (strengths) per direction.")
@click.option("--steps", "old_steps", type=int, default=None, hidden=True)   # before --steps meant training steps only
@click.option("--trunc", "truncation_psi", type=FINITE, default=0.7, show_default=True,
              help="Preview: truncation psi of the base sample.")
@common_options
def directions(generator: Path, method: str, out: Path, num: int, samples: int, span: float, steps: int,
               old_steps: Optional[int], truncation_psi: float, seed: int, device: str) -> None:
    """Editing directions of a generator (GANSpace PCA of W) and a PNG preview grid."""
    if old_steps is not None:
        raise click.UsageError("--steps is now --columns for `svgen directions` (--steps counts training steps)")
    from PIL import Image

    from svgen.editing.directions import GanspaceConfig, direction_grid, ganspace, save_directions
    from svgen.stage1_image_gan.checkpoints import load_generator
    from svgen.utils.device import select_device
    from svgen.utils.io import (atomic_path, ensure_parent_writable, file_sha256, refuse_input_as_output,
                                require_file)

    if out.suffix.lower() != ".pt":
        raise SvgenError("output must be a .pt file", out)
    require_file(generator, "generator")
    refuse_input_as_output(out, {"--generator": generator})
    ensure_parent_writable(out)
    png = out.with_suffix(".png")
    G = load_generator(generator, device=select_device(device))
    ds = ganspace(G, GanspaceConfig(num_components=num, num_samples=samples, seed=seed))
    grid = direction_grid(G, ds, seed=seed, span=span, steps=steps, truncation_psi=truncation_psi)
    save_directions(ds, out, extra={"generator": str(generator.resolve()),
                                    "generator_sha256": file_sha256(generator),
                                    "num_ws": int(G.num_ws), "preview": str(png.resolve())})
    with atomic_path(png) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    ratio = ds.meta["explained_variance_ratio"]
    click.echo(f"wrote {out} ({ds.num} directions, {sum(ratio):.1%} of W's variance; first sigma "
               f"{float(ds.sigma[0]):.3g}) and {png}")



@click.command("edit-video")
@click.argument("video", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--generator", required=True, type=click.Path(dir_okay=False, path_type=Path), help="generator.pt")
@click.option("--encoder", required=True, type=click.Path(dir_okay=False, path_type=Path), help="encoder.pt")
@edit_option
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output .mp4 (source size, fps and audio) plus .json.")
@click.option("--max-frames", type=int, default=None, callback=positive_int, help="Edit only the first N frames.")
@click.option("--refine-steps", type=int, default=0, show_default=True,
              help="Optimisation steps refining each chunk's inversion (with the temporal term).")
@click.option("--temporal-weight", type=NON_NEGATIVE, default=1.0, show_default=True,
              help="Weight of the temporal smoothness term while refining.")
@click.option("--landmarks", type=click.Choice(["dlib", "face-alignment"]), default="dlib", show_default=True,
              help="Face alignment backend.")
@click.option("--feather", type=FiniteFloat(0, 0.5), default=0.04, show_default=True,
              help="Blur of the face mask, as a fraction of the crop side.")
@common_options
def edit_video(video: Path, generator: Path, encoder: Path, edits: list, out: Path, max_frames: int | None,
               refine_steps: int, temporal_weight: float, landmarks: str, feather: float, seed: int,
               device: str) -> None:
    """Edit the face in VIDEO (invert, --edit, render) and paste it back into the original frames."""
    from svgen.pipeline.edit_video import EditVideoConfig, edit_video as run

    summary = run(EditVideoConfig(video=str(video), generator=str(generator), encoder=str(encoder), out=str(out),
                                  edits=edits, max_frames=max_frames, refine_steps=refine_steps,
                                  temporal_weight=temporal_weight, landmarks=landmarks, feather=feather,
                                  seed=seed, device=device))
    src = summary["source"]
    click.echo(f"wrote {out} ({summary['frames_written']} frames, {summary['frames_edited']} edited, "
               f"{src['width']}x{src['height']} at {src['fps']:g} fps"
               f"{', audio copied' if summary['audio_copied'] else ''})")
