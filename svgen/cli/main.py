"""The ``svgen`` console script: a click group whose commands live in one module per stage.

Commands are imported lazily so ``svgen --help`` and ``--version`` never import torch, dlib or a
stage (they take a fraction of a second), and one stage's heavy imports never slow down another's:
the group's help lists :data:`SUMMARIES` instead of importing every command for its docstring. Errors: :class:`SvgenError` and OS errors print ``svgen: error: <file>: <problem>``
and exit 1; usage errors exit 2.
"""
from __future__ import annotations

import errno
import importlib
import os
import sys
from typing import Optional, Sequence

import click

from svgen import __version__
from svgen.utils.errors import SvgenError

# MKL's conditional numerical reproducibility, set before any command loads torch. Without it MKL may sum
# in a different order from run to run (it depends on memory alignment), and pivotal tuning's dlib
# identity term grows those last-bit differences into different tuned generators: one `svgen animate`
# command on the demo moved the mouth 0.42x or 0.70x as much as the clip. A user's own setting wins.
os.environ.setdefault("MKL_CBWR", "AUTO")

# command name -> "module:attribute"
COMMANDS: dict[str, str] = {
    "preprocess": "svgen.cli.preprocess:preprocess",
    "align-photo": "svgen.cli.preprocess:align_photo",
    "merge-datasets": "svgen.cli.preprocess:merge_datasets",
    "train-image": "svgen.cli.image_train:train_image",
    "convert": "svgen.cli.image:convert",
    "generate-images": "svgen.cli.image:generate_images",
    "train-encoder": "svgen.cli.inversion:train_encoder",
    "invert": "svgen.cli.inversion:invert",
    "merge-latents": "svgen.cli.inversion:merge_latents",
    "reconstruct": "svgen.cli.inversion:reconstruct",
    "train-motion": "svgen.cli.motion:train_motion",
    "sample": "svgen.cli.motion:sample",
    "animate": "svgen.cli.motion:animate",
    "evaluate": "svgen.cli.evaluate:evaluate",
    "directions": "svgen.cli.editing:directions",
    "edit-video": "svgen.cli.editing:edit_video",
    "finetune-decoder": "svgen.cli.restyle:finetune_decoder",
    "demo": "svgen.cli.demo:demo",
}

# command name -> one line for `svgen --help` (kept here so the help needs no command's imports)
SUMMARIES: dict[str, str] = {
    "preprocess": "Videos -> stabilised FFHQ-aligned frames (aligned.zip).",
    "align-photo": "Crop one photo the way FFHQ was cropped.",
    "merge-datasets": "Join aligned.zip shards into one dataset.",
    "train-image": "Train StyleGAN2 (+ ADA) on aligned frames.",
    "convert": "Import an NVIDIA .pkl / rosinality .pt generator.",
    "generate-images": "Render images from seeds (grid or folder).",
    "train-encoder": "Train an inversion encoder (W+ or W).",
    "invert": "Invert every aligned frame into latents.h5.",
    "merge-latents": "Join latents.h5 shards into one store.",
    "reconstruct": "Render stored latents beside the original frames.",
    "train-motion": "Train a motion model (GRU or StyleInV) on latents.",
    "sample": "Sample latent trajectories (and mp4s).",
    "animate": "Animate a photo with sampled or driving-video motion.",
    "evaluate": "Score a motion model or an animation (JSON report).",
    "directions": "Editing directions of a generator (GANSpace) + preview.",
    "edit-video": "Edit the face in a real video and paste it back.",
    "finetune-decoder": "Restyle a generator on a small style set.",
    "demo": "The whole pipeline on the embedded (or your) input.",
}


class LazyGroup(click.Group):
    """A group that imports a command's module only when that command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> Optional[click.Command]:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # stage not installed in this build
                return None
            raise
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands with their :data:`SUMMARIES` line, importing none of them."""
        rows = [(name, SUMMARIES.get(name, "")) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="svgen")
def cli() -> None:
    """svgen: talking-head videos from a frozen StyleGAN2 and a latent motion model.

    Pipeline: preprocess -> train-image -> train-encoder -> invert -> train-motion -> animate.
    """


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point: run the CLI and turn failures into one line and an exit status."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="svgen",
                 standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # usage errors: exit 2
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("svgen: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("svgen: interrupted", err=True)
        sys.exit(130)
    except SvgenError as exc:
        click.echo(f"svgen: error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        what = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        click.echo(f"svgen: error: {where}{_one_line(what)}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
