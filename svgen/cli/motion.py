"""``svgen train-motion``, ``svgen sample`` and ``svgen animate`` (stage 2)."""
from __future__ import annotations

from typing import Optional

import click

from svgen.cli.common import common_options, echo_warnings
from svgen.cli.distributed import check_gpus, gpus_option, is_main_process, relaunch_under_torchrun
from svgen.utils.checks import FINITE, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT
from svgen.cli.editing import edit_option
from svgen.utils.errors import SvgenError

calibration_option = click.option(
    "--calibration", type=click.Choice(["on", "off"]), default="off", show_default=True,
    help="The GRU's motion spread calibration (fitted at the end of train-motion): each leading latent "
         "direction moves as much as in the training clips. On the demo it takes the GRU's samples' mouth "
         "from about 0.5x to 0.8x of the clip's, but through pivotal tuning a face is then missed in some "
         "frames, so it is off by default.")

layer_lift_option = click.option(
    "--layer-lift", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
    help="StyleInV trained on a W+ store: lift its W motion back onto the layers as the store moves them "
         "(fitted by train-motion; auto = on where motion.pt has a lift). Off, the W codes are broadcast to "
         "every layer and most of the store's mouth motion is lost: the demo's StyleInV through PTI, 3 motions "
         "of 150 frames, moves the demo photo's mouth 0.32-0.39x as much as the clip broadcast, and five "
         "photos' 0.56-1.13x lifted, with a face in every frame.")


@click.command("train-motion")
@click.option("--latents", required=True, type=click.Path(dir_okay=False), help="latents.h5 from `svgen invert`.")
@click.option("--model", type=click.Choice(["gru", "styleinv"]), default="gru", show_default=True,
              help="StyleVideoGAN GRU or StyleInV.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder; gets DIR/motion.pt.")
@click.option("--epochs", type=int, default=None,
              help="Training length in epochs. GRU: passes over all windows (default 350); StyleInV: "
                   "ceil(frames / batch) steps each.")
@click.option("--steps", type=int, default=None,
              help="Training length in optimisation steps, one batch each (GRU: critic steps; instead of "
                   "--epochs). StyleInV default: 20000.")
@click.option("--batch", type=int, default=None, help="Windows per batch. GRU default: 32.")
@click.option("--window", type=int, default=None, help="Frames per training window t. GRU default: 25.")
@click.option("--generator", type=click.Path(dir_okay=False), default=None,
              help="The frozen generator (checked against the store; recorded for animate; previews).")
@click.option("--encoder", type=click.Path(dir_okay=False), default=None, help="Encoder recorded for animate.")
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="aligned.zip (StyleInV image mode; unused by the GRU).")
@click.option("--disc", type=click.Choice(["latent", "image"]), default=None,
              help="StyleInV discriminator domain. Default latent: real first-frame codes, a video "
                   "discriminator on W codes (purely in latent space; not the paper's setting). The "
                   "paper's setting is --disc image (discriminator on rendered frames; needs --data).")
@click.option("--preview-every", type=int, default=None,
              help="Steps between previews. GRU: rendered mp4s (needs --generator; default off); StyleInV: "
                   "PNG grids (default: at each snapshot).")
@click.option("--lr", type=POSITIVE, default=None,
              help="Learning rate of the motion generator: StyleInV's SI (default 1e-4, the paper's; D keeps "
                   "2e-3) or the GRU's G (default 2e-4; the critic keeps its own). Short runs need more: the "
                   "demo's 600 StyleInV steps learn the mouth at 1e-3, hardly at 1e-4. On --resume the run's own.")
@click.option("--stride", type=int, default=None, help="GRU: window stride within a clip (default: the window).")
@click.option("--lambda-gap", type=NON_NEGATIVE, default=None, help="GRU: gradient angle penalty weight (default 100; 0 = off).")
@click.option("--penalty-units", type=click.Choice(["raw", "normalised"]), default=None,
              help="GRU: measure the critic's gradient penalty in raw W+ units (default, the paper's) or in "
                   "units of the latents' spread (see benchmarks/gru_penalty.py).")
@click.option("--n-critic", type=int, default=None,
              help="GRU: critic steps (one batch each) per generator step (default 5).")
@click.option("--snapshot-every", type=int, default=None,
              help="Steps between checkpoints (latest.pt) and metrics. Default: GRU 200 (on --resume the "
                   "run's own), StyleInV 1000.")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoints/latest.pt.")
@gpus_option
@common_options
def train_motion(latents: str, model: str, out: str, epochs: Optional[int], steps: Optional[int],
                 batch: Optional[int], window: Optional[int], generator: Optional[str], encoder: Optional[str],
                 data: Optional[str], disc: Optional[str], preview_every: Optional[int], lr: Optional[float],
                 stride: Optional[int],
                 lambda_gap: Optional[float], penalty_units: Optional[str], n_critic: Optional[int],
                 snapshot_every: Optional[int], resume: bool, gpus: int, seed: int,
                 device: str) -> None:
    """Train a motion model on latent trajectories (no frames are rendered during training)."""
    for name, value in (("--epochs", epochs), ("--steps", steps), ("--batch", batch), ("--window", window),
                        ("--stride", stride), ("--snapshot-every", snapshot_every),
                        ("--n-critic", n_critic)):
        if value is not None and value <= 0:
            raise SvgenError(f"{name} must be a positive integer, got {value}")
    if epochs is not None and steps is not None:
        raise click.UsageError("give either --epochs or --steps, not both")
    if window is not None and window < 2:
        raise SvgenError(f"--window must be at least 2 frames (motion needs a next frame), got {window}")
    if preview_every is not None and preview_every < 0:
        raise SvgenError(f"--preview-every must be >= 0, got {preview_every}")
    given = {"--stride": stride, "--lambda-gap": lambda_gap, "--penalty-units": penalty_units,
             "--n-critic": n_critic} if model == "styleinv" else {"--data": data, "--disc": disc}
    refused = [name for name, value in given.items() if value is not None]
    if refused:
        other = "gru" if model == "styleinv" else "styleinv"
        raise click.UsageError(f"{', '.join(refused)} {'does' if len(refused) == 1 else 'do'} not apply to "
                               f"--model {model} (only to --model {other})")
    if gpus > 1 and model == "gru":
        raise SvgenError(f"--gpus {gpus}: the GRU trains in one process (multi-process training is for "
                         "--model styleinv)")
    check_gpus(gpus, device)
    if gpus > 1 and batch is not None and not resume:   # whole minibatch-std groups of D per process
        import torch

        from svgen.stage2_motion.styleinv.train import _largest_divisor_le
        from svgen.training.dist import Dist

        Dist(rank=0, world_size=gpus, device=torch.device("cpu")).share_index(batch, _largest_divisor_le(batch, 4))
    if relaunch_under_torchrun(gpus, out):   # process 0 of the group says what it wrote
        return
    if model == "styleinv":
        from svgen.stage2_motion.styleinv.train import run_from_cli

        with echo_warnings():   # e.g. a W+ store whose mean over layers loses the motion
            path = run_from_cli(latents=latents, out=out, epochs=epochs, steps=steps, batch=batch, window=window,
                                generator=generator, encoder=encoder, data=data, disc=disc,
                                preview_every=preview_every, snapshot_every=snapshot_every, lr=lr,
                                resume=resume, seed=seed, device=device)
        if is_main_process():
            click.echo(f"wrote {path}" if path else f"done: {out}")
        return

    from svgen.stage2_motion.gru.model import GRUMotionConfig
    from svgen.stage2_motion.gru.train import GRUTrainConfig, train_gru

    cfg = GRUTrainConfig(latents=latents, out=out, model=GRUMotionConfig(), generator=generator,
                         encoder=encoder, seed=seed, device=device)
    if window is not None:
        cfg.model.window = window
    if lr is not None:
        cfg.lr_G = lr
    for name, value in (("epochs", epochs), ("steps", steps), ("batch", batch), ("stride", stride),
                        ("preview_every", preview_every), ("lambda_gap", lambda_gap),
                        ("penalty_units", penalty_units), ("n_critic", n_critic), ("snapshot_every", snapshot_every)):
        if value is not None:
            setattr(cfg, name, value)
    path = train_gru(cfg, resume=resume)
    click.echo(f"wrote {path}")


@click.command("sample")
@click.option("--motion", required=True, type=click.Path(dir_okay=False), help="motion.pt")
@click.option("--num", type=int, default=4, show_default=True, help="Number of trajectories.")
@click.option("--frames", type=int, default=250, show_default=True, help="Frames per trajectory.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--generator", type=click.Path(dir_okay=False), default=None,
              help="Render each trajectory to an mp4 with this generator.")
@click.option("--fps", type=POSITIVE, default=None, help="Frame rate of the mp4s (default: the training fps).")
@click.option("--batch", type=POSITIVE_INT, default=8, show_default=True, help="Frames rendered at once.")
@edit_option
@click.option("--render-generator", type=click.Path(dir_okay=False), default=None,
              help="Render through this restyled copy of --generator (svgen finetune-decoder).")
@calibration_option
@layer_lift_option
@common_options
def sample(motion: str, num: int, frames: int, out: str, generator: Optional[str], fps: Optional[float],
           batch: int, edits: list, render_generator: Optional[str], calibration: str, layer_lift: str, seed: int,
           device: str) -> None:
    """Sample latent trajectories (DIR/latents.npy) and, with --generator, mp4s."""
    from svgen.pipeline.sample import sample_to_dir

    with echo_warnings():  # library warnings as one "svgen: warning:" line, not Python's two
        summary = sample_to_dir(motion, num, frames, out, seed=seed, generator=generator, fps=fps,
                                batch=batch, device=device, edits=edits, render_generator=render_generator,
                                calibration=calibration == "on", layer_lift=layer_lift)
    click.echo(f"wrote {summary['latents']} {tuple(summary['latents_shape'])}"
               + (f" and {len(summary['videos'])} videos" if summary["videos"] else ""))


@click.command("animate")
@click.option("--identity", required=True, type=click.Path(dir_okay=False), help="Photo of the new face.")
@click.option("--motion", type=click.Path(dir_okay=False), default=None,
              help="motion.pt (optional with --driving, which then needs --generator and --encoder).")
@click.option("--generator", type=click.Path(dir_okay=False), default=None,
              help="Frozen generator (default: the one recorded in the motion checkpoint).")
@click.option("--encoder", type=click.Path(dir_okay=False), default=None,
              help="Encoder (default: the one recorded in the motion checkpoint).")
@click.option("--frames", type=int, default=None, help="Frames to write (default 250, or the driving video's length).")
@click.option("--fps", type=POSITIVE, default=None, help="Frame rate (default 25, or the driving video's).")
@click.option("--driving", type=click.Path(dir_okay=False), default=None,
              help="Transfer the motion of this real video instead of sampling motion.")
@click.option("--driving-mouth", type=click.Choice(["auto", "landmarks", "codes"]), default="auto", show_default=True,
              help="Where the driving video's mouth comes from. landmarks: dlib's mouth aspect ratio of each "
                   "driving frame, moved along the direction in which the generator opens the mouth in "
                   "--motion's training store (the encoder of a single-actor generator keeps little of "
                   "another person's mouth: a MEAD clip driving the demo moved the mouth 0.06x as much as "
                   "the clip, 0.6x with landmarks); codes: the inverted codes as they are (also when no "
                   "--motion store is given). auto: landmarks unless --landmarks none.")
@click.option("--grid", type=POSITIVE_INT, default=1, show_default=True, help="Write K seeds side by side.")
@click.option("--refine-steps", type=NON_NEGATIVE_INT, default=0, show_default=True,
              help="Optimisation steps refining the photo's inversion.")
@click.option("--offset", type=click.Choice(["auto", "pca", "mean", "naive", "none"]), default="auto",
              show_default=True,
              help="How motion moves onto the photo's code: PCA projection (StyleVideoGAN's offset trick), "
                   "mean (the training codes' mean moved onto the photo: motion around the pivot, what a "
                   "pivotal-tuned generator needs), naive first-frame shift, or none. auto: mean with "
                   "--tune pti, pca with --tune none.")
@click.option("--offset-components", type=POSITIVE_INT, default=None, help="PCA components used (default all, 32).")
@click.option("--offset-layers", default=None, help="W+ layers shifted, e.g. '0-7' (default all).")
@click.option("--offset-strength", type=FINITE, default=1.0, show_default=True, help="Scale of the offset.")
@click.option("--motion-layers", default="auto", show_default=True,
              help="W+ layers that move, e.g. '0-4'; the others stay at the photo's code. auto: with --tune pti "
                   "the blocks up to an eighth of the resolution (0-3 at 64 px, 0-7 at 256 px; the finer "
                   "layers' motion carries the training actor's colour and hair), else all.")
@click.option("--landmarks", type=click.Choice(["dlib", "face-alignment", "none"]), default="dlib",
              show_default=True, help="Photo alignment backend.")
@click.option("--batch", type=POSITIVE_INT, default=8, show_default=True, help="Frames rendered at once.")
@click.option("--slowmo", type=POSITIVE, default=1.0, show_default=True,
              help="StyleInV: play the sampled motion this many times slower (no retraining).")
@click.option("--tune", type=click.Choice(["pti", "none"]), default="pti", show_default=True,
              help="Identity: pivotal tuning (PTI) of a generator copy so it renders the photo itself, "
                   "cached per photo and generator; 'none' renders the encoder's nearest face of the "
                   "generator. Cost per new photo (350 steps): seconds at 64 px on a CPU; at 256 px about "
                   "25 min on 2 CPU cores or ~30 s on a GPU; at 1024 px a GPU is needed (~2-3 min).")
@click.option("--tune-steps", type=POSITIVE_INT, default=350, show_default=True, help="PTI steps (stops early at 40 dB).")
@click.option("--tune-id-loss", type=click.Choice(["dlib", "none"]), default="dlib", show_default=True,
              help="PTI's identity term (weight 0.1): dlib's face-recognition network, shipped with the "
                   "landmark model. At 64 px it brings the tuned render to dlib distance 0.35 of the photo "
                   "instead of 0.46, for about twice the tuning time; 'none' is PTI's published loss.")
@click.option("--tune-motion", type=NON_NEGATIVE, default=None,
              help="Weight of PTI's motion term (0: off) [default: 1; 0 with --tune none]: the tuned generator "
                   "must change under the motion's own offsets as the original does on its average face (inside the face; outside it "
                   "not at all; the mouth is left to --tune-mouth), so the photo does not dissolve into the "
                   "training actor away from the pivot. On the demo (64 px, GRU) it keeps a face in every frame "
                   "where the mouth term alone lost 12-29 % of them; about twice the tuning time.")
@click.option("--tune-mouth", type=NON_NEGATIVE, default=3.0, show_default=True,
              help="Weight of PTI's mouth term (0: off): the tuned generator must open the photo's own mouth "
                   "(the lower lip moved down, the gap darkened) along the direction in which the original "
                   "generator opens it in the motion's training store (the driving video's codes with --driving-mouth "
                   "codes). Without it, PTI "
                   "draws the photo's closed mouth all around the pivot. On the demo (64 px, with the "
                   "motion term) four held-out photos' mouths move 0.59-1.31x as much as the training clip's "
                   "(GRU and StyleInV, 250 frames), a MEAD clip drives one to 0.78x of its own. "
                   "Costs 150 renders with landmarks and about 1.5x the tuning time.")
@calibration_option
@layer_lift_option
@click.option("--tune-cache", type=click.Path(file_okay=False), default=None,
              help="Folder of tuned generators [default: $SVGEN_CACHE/pti or ~/.cache/svgen/pti].")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .mp4 (plus .npy and .json).")
@edit_option
@click.option("--paste-back", is_flag=True, help="Composite the animated face into the original photo "
                                                  "(the video has the photo's size).")
@click.option("--render-generator", type=click.Path(dir_okay=False), default=None,
              help="Render through this restyled copy of the generator (svgen finetune-decoder); with "
                   "--tune pti the photo's tuning is added to it as a weight delta.")
@common_options
def animate(identity: str, motion: Optional[str], generator: Optional[str], encoder: Optional[str],
            frames: Optional[int], fps: Optional[float], driving: Optional[str], driving_mouth: str, grid: int,
            refine_steps: int,
            offset: str, offset_components: Optional[int], offset_layers: Optional[str], offset_strength: float,
            motion_layers: str, landmarks: str, batch: int, slowmo: float, tune: str, tune_steps: int,
            tune_id_loss: str, tune_motion: Optional[float], tune_mouth: float, calibration: str, layer_lift: str,
            tune_cache: Optional[str], out: str, edits: list, paste_back: bool, render_generator: Optional[str], seed: int,
            device: str) -> None:
    """Animate a photo with sampled (or driving-video) motion and write an mp4."""
    from svgen.pipeline.animate import AnimateSettings, animate as run_animate

    st = AnimateSettings(identity=identity, out=out, motion=motion, generator=generator, encoder=encoder,
                         frames=frames, fps=fps, seed=seed, driving=driving, driving_mouth=driving_mouth, grid=grid,
                         refine_steps=refine_steps, offset=offset, offset_components=offset_components,
                         offset_layers=offset_layers, offset_strength=offset_strength,
                         motion_layers=motion_layers, landmarks=landmarks,
                         batch=batch, device=device, slowmo=slowmo, tune=tune, tune_steps=tune_steps,
                         tune_id_loss=tune_id_loss, tune_motion=tune_motion, tune_mouth=tune_mouth,
                         calibration=calibration, layer_lift=layer_lift, tune_cache=tune_cache, edits=edits,
                         paste_back=paste_back,
                         render_generator=render_generator)
    with echo_warnings():  # library warnings as one "svgen: warning:" line, not Python's two
        summary = run_animate(st)
    res = summary["resolved"]
    click.echo(f"wrote {summary['outputs']['video']} ({res['frames']} frames at {res['fps']:g} fps)")

