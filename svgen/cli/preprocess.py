"""``svgen preprocess`` (videos -> aligned.zip) and ``svgen align-photo`` (one FFHQ-aligned photo)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from svgen.cli.common import common_options, echo_warnings, positive_int
from svgen.utils.checks import NON_NEGATIVE, POSITIVE

MIN_SIZE = 16  # smallest crop that still holds a face (and that StyleGAN presets start from)


def _parse_box(ctx: click.Context, param: click.Parameter, value: Optional[str]):
    if value is None:
        return None
    try:
        parts = tuple(float(v) for v in value.replace(" ", "").split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4 or parts[2] <= 0 or parts[3] <= 0:
        raise click.BadParameter(f"expected X,Y,W,H with positive W and H, got {value!r}")
    return parts


def _torch_device(device: str) -> str:
    from svgen.utils.device import select_device

    return str(select_device(device))


@click.command("preprocess")
@click.argument("videos", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output dataset (aligned.zip).")
@click.option("--size", default=256, show_default=True, type=click.IntRange(min=MIN_SIZE),
              help="Crop resolution in pixels.")
@click.option("--landmarks", type=click.Choice(["dlib", "face-alignment", "none"]), default="dlib",
              show_default=True, help="Face landmarks backend; 'none' = generic centre crop / --box.")
@click.option("--detector", type=click.Choice(["hog", "cnn"]), default="hog", show_default=True,
              help="dlib face detector (cnn = mmod, slower, finds harder faces).")
@click.option("--smooth", type=NON_NEGATIVE, default=3.0, show_default=True, metavar="FRAMES",
              help="Temporal low-pass strength: Gaussian sigma in frames for the crop's centre, "
                   "rotation and scale; 0 disables.")
@click.option("--max-frames", type=int, default=None, callback=positive_int,
              help="Use at most N frames of each video.")
@click.option("--fps", type=POSITIVE, default=None,
              help="Resample videos to this frame rate (default: keep the source rate).")
@click.option("--detect-every", type=int, default=5, show_default=True, callback=positive_int,
              help="Re-detect the face around its tracked position every K frames.")
@click.option("--max-gap", type=NON_NEGATIVE, default=0.5, show_default=True, metavar="SECONDS",
              help="Gaps without a face up to this long are interpolated; longer gaps split the clip.")
@click.option("--min-length", type=NON_NEGATIVE, default=0.3, show_default=True, metavar="SECONDS",
              help="Drop face segments shorter than this.")
@click.option("--box", default=None, callback=_parse_box, metavar="X,Y,W,H",
              help="With --landmarks none: crop this fixed box instead of the centre square.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes: over videos, and over the chunks of a long video (same dataset as 1).")
@click.option("--chunk-frames", type=click.IntRange(min=1), default=1500, show_default=True,
              help="A video is tracked in chunks of this many frames, each from a fresh face detection "
                   "(the work a worker takes); the low-pass still runs over the whole video.")
@click.option("--shard", default=None, metavar="I/N",
              help="Only the I-th of N contiguous blocks of the VIDEOs (a job-array task; 'env' reads "
                   "SLURM_ARRAY_TASK_ID/COUNT or RANK/WORLD_SIZE); join with `svgen merge-datasets`.")
@click.option("--summary-json", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the summary as JSON.")
@common_options
def preprocess(videos, out, size, landmarks, detector, smooth, max_frames, fps, detect_every, max_gap,
               min_length, box, workers, chunk_frames, shard, summary_json, seed, device) -> None:
    """Turn talking-head VIDEOs into a stabilised, FFHQ-aligned frame dataset (aligned.zip).

    Faces are tracked, cropped from the eye corners (StyleVideoGAN) and low-passed over time;
    short face gaps are interpolated, long ones split the clip. Prints a summary per video.
    """
    from svgen.preprocessing.videos import format_summary, preprocess_videos
    from svgen.utils.io import write_json
    from svgen.utils.shard import parse_shard

    if box is not None and landmarks != "none":
        raise click.UsageError("--box only applies with --landmarks none")
    shard_ij = None if shard is None else parse_shard(shard)
    dev = _torch_device(device) if landmarks == "face-alignment" else "cpu"
    with echo_warnings():
        summary = preprocess_videos(list(videos), out, size=size, landmarks=landmarks, smooth=smooth,
                                    max_frames=max_frames, fps=fps, detector=detector,
                                    detect_every=detect_every, max_gap=max_gap, min_length=min_length,
                                    box=box, device=dev, workers=workers, chunk_frames=chunk_frames,
                                    shard=shard_ij)
    click.echo(format_summary(summary))
    if summary_json is not None:
        write_json(summary_json, summary)


@click.command("align-photo")
@click.argument("photo", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output image (.png or .jpg).")
@click.option("--size", default=256, show_default=True, type=click.IntRange(min=MIN_SIZE),
              help="Output resolution in pixels.")
@click.option("--landmarks", type=click.Choice(["dlib", "face-alignment", "none"]), default="dlib",
              show_default=True, help="Face landmarks backend; 'none' = centre crop.")
@click.option("--detector", type=click.Choice(["hog", "cnn"]), default="hog", show_default=True,
              help="dlib face detector.")
@click.option("--strict", is_flag=True, help="Fail unless exactly one face is found.")
@click.option("--quad-json", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the crop quad and landmarks (source pixels) as JSON.")
@common_options
def align_photo(photo, out, size, landmarks, detector, strict, quad_json, seed, device) -> None:
    """Crop PHOTO the way FFHQ was cropped (eyes + mouth), for inversion and `animate`."""
    from PIL import Image

    from svgen.preprocessing.pipeline import align_photo_info
    from svgen.utils.io import atomic_path, ensure_parent_writable, write_json

    suffix = out.suffix.lower()
    formats = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}
    if suffix not in formats:
        raise click.BadParameter(f"unsupported image extension {out.suffix!r} (use .png or .jpg)",
                                 param_hint="--out")
    ensure_parent_writable(out)  # fail before the work
    dev = _torch_device(device) if landmarks == "face-alignment" else "cpu"
    with echo_warnings():
        res = align_photo_info(photo, size, landmarks=landmarks, strict=strict, detector=detector, device=dev)
    with atomic_path(out) as tmp:
        save_kwargs = {"quality": 95} if formats[suffix] == "JPEG" else {}
        Image.fromarray(res.image).save(tmp, format=formats[suffix], **save_kwargs)
    if quad_json is not None:
        write_json(quad_json, {"source": str(photo), "size": size, "quad": res.quad.tolist(),
                               "landmarks": None if res.landmarks is None else res.landmarks.tolist(),
                               "num_faces": res.num_faces})
    click.echo(f"{photo} -> {out} ({size}x{size}, {res.num_faces} face(s) found)"
               if landmarks != "none" else f"{photo} -> {out} ({size}x{size}, centre crop)")


@click.command("merge-datasets")
@click.argument("parts", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Dataset to write (aligned.zip).")
@common_options
def merge_datasets(parts, out, seed, device) -> None:
    """Join aligned datasets (the shards of `svgen preprocess --shard`) into one aligned.zip.

    Every part must have the same resolution and alignment settings; shards of one split are put
    in shard order and must all be given, so the result equals the unsharded dataset.
    """
    from svgen.preprocessing.dataset import merge_datasets as merge
    from svgen.utils.io import refuse_input_as_output

    refuse_input_as_output(out, {f"part {k + 1}": p for k, p in enumerate(parts)})
    res = merge(list(parts), out)
    click.echo(f"{len(res['parts'])} part(s) -> {out}: {res['clips']} clip(s), {res['frames']} frames")


__all__ = ["preprocess", "align_photo", "merge_datasets"]
