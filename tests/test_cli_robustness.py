"""Hostile-but-fair use of the CLI (issue #18): a full disk, NaN options, an output that is an
input, two writers at once, killed runs. Every case must end in one line and exit status 1 (usage
errors 2), leaving no complete-looking or half-written output behind."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from svgen.utils.io import file_sha256, torch_save_atomic

from clitools import ok_cli, run_cli

REPO = Path(__file__).resolve().parents[1]


# -- a real full disk: a small tmpfs in a private mount namespace ------------------------------
def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=16k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.fixture(scope="session")
def small_disk_ok() -> None:
    if not _can_mount_tmpfs():
        pytest.skip("cannot mount a tmpfs in a user/mount namespace (unshare -rm) here")


def run_on_small_disk(disk: Path, size_kb: int, *args: object) -> tuple[int, str, list[str]]:
    """Run ``svgen ARGS`` with a ``size_kb`` tmpfs mounted on ``disk``; returns (exit status,
    stderr, every path the command left on the disk). The mount is
    private to the child, so it vanishes with it."""
    disk.mkdir(parents=True, exist_ok=True)
    script = (f"mount -t tmpfs -o size={size_kb}k tmpfs {disk} && "
              f"\"$@\" >/dev/null; rc=$?; echo @@LEFT@@; cd {disk} && find . -mindepth 1; exit $rc")
    env = dict(os.environ, PYTHONPATH=str(REPO), SVGEN_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", sys.executable, "-m",
                           "svgen.cli.main", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)
    left = proc.stdout.split("@@LEFT@@", 1)[-1].split()
    return proc.returncode, proc.stderr, [n[2:] for n in left]


def one_line_error(err: str, *words: str) -> str:
    """The single ``svgen: error:`` line of ``err`` (asserting there is exactly one, no traceback)."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    errors = [ln for ln in lines if ln.startswith("svgen: error:")]
    assert len(errors) == 1, err
    for w in words:
        assert w in errors[0], (w, errors[0])
    return errors[0]


# -- fixtures: an untrained encoder for the tiny generator --------------------------------------
@pytest.fixture(scope="module")
def encoder_path(random_generator_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained W+ encoder saved against ``random_generator_path`` (plumbing only)."""
    from svgen.inversion.encoders import build_encoder, encoder_checkpoint, make_encoder_config
    from svgen.stage1_image_gan.checkpoints import load_generator

    G = load_generator(random_generator_path)
    torch.manual_seed(0)
    E = build_encoder(make_encoder_config("w+", "tiny", G.num_ws, G.w_dim, G.img_resolution),
                      G.mapping.w_avg)
    path = tmp_path_factory.mktemp("enc") / "encoder.pt"
    torch_save_atomic(encoder_checkpoint(E, None, file_sha256(random_generator_path)), path)
    return path


# -- 1. full disk in invert ----------------------------------------------------------------------
def test_invert_full_disk_leaves_nothing_and_says_so(small_disk_ok, random_generator_path, encoder_path,
                                                     real_frames_zip32, tmp_path):
    disk = tmp_path / "disk"
    code, err, left = run_on_small_disk(
        disk, 160, "invert", "--generator", random_generator_path, "--encoder", encoder_path,
        "--data", real_frames_zip32, "--out", disk / "l.h5", "--batch", "8")
    assert code == 1, err
    one_line_error(err, str(disk / "l.h5"), "no space left on device")
    assert left == [], left  # no store, no .partial, no lock file


def test_invert_verifies_and_records_checksum(random_generator_path, encoder_path, real_frames_zip32,
                                              tmp_path, capsys):
    import h5py

    from svgen.inversion.latent_store import _digest_clips

    out = tmp_path / "l.h5"
    ok_cli(capsys, "invert", "--generator", random_generator_path, "--encoder", encoder_path,
           "--data", real_frames_zip32, "--out", out, "--batch", "16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.h5"]
    with h5py.File(out, "r") as f:
        recorded = f.attrs["data_sha256"]
        assert recorded == _digest_clips(f)
        assert all(np.abs(g["w"][:]).sum() > 0 for g in f["clips"].values())


def test_second_invert_on_same_output_is_refused(random_generator_path, encoder_path, tmp_path):
    from svgen.inversion.latent_store import LatentStoreWriter

    out = tmp_path / "l.h5"
    first = LatentStoreWriter(out, space="w", num_ws=8, w_dim=4, generator_sha256="g")
    try:
        with pytest.raises(Exception) as info:
            LatentStoreWriter(out, space="w", num_ws=8, w_dim=4, generator_sha256="g", resume=True)
        assert "another svgen process" in str(info.value) and str(out) in str(info.value)
        assert first.tmp.exists()  # the first writer's partial store was not truncated
    finally:
        first.close()


# -- 2. full disk in torch.save paths ----------------------------------------------------------
def test_convert_full_disk_one_line(small_disk_ok, random_generator_path, tmp_path):
    disk = tmp_path / "disk"
    code, err, left = run_on_small_disk(disk, 64, "convert", random_generator_path, "--out", disk / "g.pt")
    assert code == 1, err
    one_line_error(err, str(disk / "g.pt"), "no space left on device")
    assert left == [], left


def test_stale_temporaries_of_killed_runs_are_removed(random_generator_path, tmp_path, capsys):
    out = tmp_path / "g.pt"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".g.pt.{dead.pid}.abcd.tmp.pt"
    stale.write_bytes(b"x" * 1000)
    alive = tmp_path / f".g.pt.{os.getpid() + 0}.efgh.tmp.pt"  # this process is alive: kept
    alive.write_bytes(b"y")
    ok_cli(capsys, "convert", random_generator_path, "--out", out)
    assert out.is_file() and not stale.exists() and alive.exists()


# -- 3. an output that is one of the inputs ---------------------------------------------------------
def _writing_commands(src: Path) -> list[list]:
    """One invocation per command that writes a file, with --out naming the input ``src``."""
    return [["preprocess", src, "--out", src],
            ["align-photo", src, "--out", src],
            ["invert", "--generator", src, "--encoder", src, "--data", src, "--out", src],
            ["convert", src, "--out", src],
            ["generate-images", "--generator", src, "--out", src],
            ["reconstruct", "--latents", src, "--out", src],
            ["animate", "--identity", src, "--motion", src, "--out", src],
            ["evaluate", "--latents", src, "--out", src]]


@pytest.mark.parametrize("index", range(8))
@pytest.mark.parametrize("link", [False, True], ids=["same-path", "hard-link"])
def test_output_that_is_an_input_is_refused(index, link, tmp_path, capsys):
    src = tmp_path / "input.bin"
    src.write_bytes(b"precious input")
    args = _writing_commands(src)[index]
    if link:  # --out is another name of the same inode
        other = tmp_path / "other.bin"
        os.link(src, other)
        args[-1] = other
    code, _, err = run_cli(capsys, *args)
    assert code == 1, err
    one_line_error(err, "the output is also an input")
    assert src.read_bytes() == b"precious input"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["input.bin"] + ["other.bin"] * link)


# -- 5. NaN / infinity / out-of-range numbers in every float option ------------------------------
def _float_options() -> list[tuple[str, str]]:
    """(command, option) for every float-valued option of every command."""
    import click

    from svgen.cli.main import COMMANDS, cli

    ctx = click.Context(cli)
    return [(name, p.opts[0]) for name in COMMANDS for p in cli.get_command(ctx, name).params
            if isinstance(p, click.Option) and p.type.name.startswith("float")]


@pytest.mark.parametrize("command,option", _float_options())
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_float_option_refuses_non_finite(command, option, value, capsys):
    code, _, err = run_cli(capsys, command, f"{option}={value}")
    assert code == 2, err
    assert "finite" in err and option in err and "Traceback" not in err


def test_float_options_are_all_checked():
    """Every float option uses FiniteFloat (a new option without it fails here)."""
    import click

    from svgen.cli.main import COMMANDS, cli
    from svgen.utils.checks import FiniteFloat

    ctx = click.Context(cli)
    floats = [(n, p.opts[0], p.type) for n in COMMANDS for p in cli.get_command(ctx, n).params
              if isinstance(p.type, (click.types.FloatParamType, FiniteFloat))]
    assert floats and all(isinstance(t, FiniteFloat) for _, _, t in floats), floats


@pytest.mark.parametrize("args", [
    ["sample", "--batch", "0"], ["sample", "--fps", "0"],
    ["animate", "--batch", "0"], ["animate", "--fps", "0"], ["animate", "--slowmo", "-1"],
    ["reconstruct", "--fps", "0"], ["preprocess", "--smooth", "-1"], ["train-image", "--p", "1.5"],
    ["train-encoder", "--lr", "0"], ["invert", "--temporal-weight", "-0.1"],
])
def test_out_of_range_numbers_are_usage_errors(args, capsys):
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and args[1] in err and "Traceback" not in err, err


# -- 4. multi-file outputs appear together or not at all ----------------------------------------
@pytest.fixture(scope="module")
def motion_path(random_generator_path, encoder_path, real_frames_zip32, tmp_path_factory) -> Path:
    """A GRU motion.pt trained 2 steps on latents inverted by the untrained encoder (plumbing)."""
    from svgen.inversion.api import invert_dataset
    from svgen.inversion.encoders import load_encoder
    from svgen.stage1_image_gan.checkpoints import load_generator
    from motiontools import train_tiny_gru

    d = tmp_path_factory.mktemp("motion")
    G = load_generator(random_generator_path)
    latents = invert_dataset(G, load_encoder(encoder_path), real_frames_zip32, d / "latents.h5",
                             generator_sha256=file_sha256(random_generator_path),
                             encoder_sha256=file_sha256(encoder_path), show_progress=False)
    return train_tiny_gru(latents, d / "motion", random_generator_path, encoder_path)


def test_animate_full_disk_leaves_no_partial_set(small_disk_ok, motion_path, shared, tmp_path):
    """The mp4 fits on the disk but its .npy does not: nothing at all may remain."""
    disk = tmp_path / "disk"
    photo = shared / "data" / "photos" / "hyperstyle_aligned" / "pitt.jpg"
    code, err, left = run_on_small_disk(
        disk, 96, "animate", "--identity", photo, "--motion", motion_path, "--frames", 40,
        "--tune", "none", "--landmarks", "none", "--device", "cpu", "--out", disk / "a.mp4")
    assert code == 1, err
    one_line_error(err, "no space left on device")
    assert left == [], left


def test_sample_failure_leaves_nothing_and_success_writes_all(small_disk_ok, motion_path,
                                                              random_generator_path, tmp_path, capsys):
    disk = tmp_path / "disk"
    code, err, left = run_on_small_disk(disk, 64, "sample", "--motion", motion_path, "--num", 2,
                                        "--frames", 40, "--generator", random_generator_path,
                                        "--device", "cpu", "--out", disk)
    assert code == 1 and left == [], (err, left)
    one_line_error(err, "no space left on device")
    out = tmp_path / "ok"
    ok_cli(capsys, "sample", "--motion", motion_path, "--num", 2, "--frames", 6,
           "--generator", random_generator_path, "--device", "cpu", "--out", out)
    assert sorted(p.name for p in out.iterdir()) == ["latents.npy", "sample.json", "sample_000.mp4",
                                                     "sample_001.mp4"]


# -- 6. tracebacks that must be one line -----------------------------------------------------------
def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` x ``height`` pixels (no pixel data: a decompression bomb's
    header is all a reader needs to refuse it)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [14000, 9500], ids=["196MP-bomb", "90MP"])
def test_huge_photo_is_refused_with_the_limit(side, tmp_path, capsys):
    big = _png_header_only(tmp_path / "big.png", side, side)
    code, _, err = run_cli(capsys, "align-photo", big, "--out", tmp_path / "a.png", "--landmarks", "none")
    assert code == 1, err
    one_line_error(err, str(big), "too large", "89 megapixels")
    assert "Warning" not in err and not (tmp_path / "a.png").exists()


def test_train_motion_refuses_nan_latents_and_short_window(random_generator_path, encoder_path,
                                                           real_frames_zip32, tmp_path, capsys):
    import h5py

    store = tmp_path / "l.h5"
    ok_cli(capsys, "invert", "--generator", random_generator_path, "--encoder", encoder_path,
           "--data", real_frames_zip32, "--out", store)
    code, _, err = run_cli(capsys, "train-motion", "--latents", store, "--out", tmp_path / "m1",
                           "--window", 1, "--steps", 1)
    assert code == 1
    one_line_error(err, "--window must be at least 2")
    with h5py.File(store, "r+") as f:  # damage one frame, as a hostile file would
        f["clips"][list(f["clips"])[0]]["w"][5] = np.nan
    code, _, err = run_cli(capsys, "train-motion", "--latents", store, "--out", tmp_path / "m2",
                           "--window", 8, "--batch", 2, "--steps", 1)
    assert code == 1
    one_line_error(err, str(store), "not finite", "first frame 5")


def test_align_photo_size_has_a_minimum(shared, tmp_path, capsys):
    photo = shared / "data" / "photos" / "hyperstyle_aligned" / "pitt.jpg"
    code, _, err = run_cli(capsys, "align-photo", photo, "--out", tmp_path / "a.png", "--size", 3,
                           "--landmarks", "none")
    assert code == 2 and "--size" in err and not (tmp_path / "a.png").exists()


# -- 8. one writer per run folder ----------------------------------------------------------------
def test_second_training_into_a_busy_run_folder_fails(real_frames_zip32, tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom svgen.utils.rundir import RunDir\n"
         "r = RunDir(sys.argv[1]); print('locked', flush=True); time.sleep(300)", str(run)],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = run_cli(capsys, "train-image", "--data", real_frames_zip32, "--out", run,
                               "--preset", "tiny", "--kimg", "0.004", "--no-metrics", "--device", "cpu")
        assert code == 1, err
        one_line_error(err, str(run), "another svgen process")
        assert not (run / "checkpoints" / "latest.pt").exists()
    finally:
        holder.kill()
        holder.wait()


# -- 7. StyleInV honours --snapshot-every: a killed short run resumes -----------------------------
@pytest.mark.slow
def test_styleinv_killed_short_run_resumes_to_same_weights(random_generator_path, encoder_path,
                                                           real_frames_zip32, tmp_path, capsys):
    import signal
    import time

    store = tmp_path / "l.h5"
    ok_cli(capsys, "invert", "--generator", random_generator_path, "--encoder", encoder_path,
           "--data", real_frames_zip32, "--out", store)
    base = ["train-motion", "--model", "styleinv", "--latents", store, "--generator", random_generator_path,
            "--steps", 8, "--snapshot-every", 2, "--batch", 2, "--device", "cpu"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "svgen.cli.main", *map(str, base), "--out", str(killed)],
                            env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    latest = killed / "checkpoints" / "latest.pt"
    deadline = time.time() + 300
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert latest.exists() and not (killed / "motion.pt").exists()  # killed mid-run, after a snapshot
    ok_cli(capsys, *base, "--out", killed, "--resume")
    ok_cli(capsys, *base, "--out", tmp_path / "full")
    a = torch.load(killed / "motion.pt", weights_only=True)
    b = torch.load(tmp_path / "full" / "motion.pt", weights_only=True)
    for k in b["SI"]:
        torch.testing.assert_close(a["SI"][k], b["SI"][k], rtol=0, atol=1e-6)


# -- 9. resume refuses changed data ------------------------------------------------------------------
def _with_one_frame_changed(src: Path, out: Path) -> Path:
    """A copy of an aligned.zip whose first frame is replaced by its second (same layout)."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w") as zout:
        frames = sorted(n for n in zin.namelist() if n.endswith(".png"))
        for name in zin.namelist():
            zout.writestr(name, zin.read(frames[1] if name == frames[0] else name))
    return out


def test_resume_with_changed_data_is_refused(random_generator_path, real_frames_zip32, tmp_path, capsys):
    other = _with_one_frame_changed(real_frames_zip32, tmp_path / "other.zip")
    img = ["train-image", "--out", tmp_path / "img", "--preset", "tiny", "--no-metrics", "--device", "cpu"]
    ok_cli(capsys, *img, "--data", real_frames_zip32, "--kimg", "0.008")
    code, _, err = run_cli(capsys, *img, "--data", other, "--kimg", "0.016", "--resume")
    assert code == 1
    one_line_error(err, str(other), "trained on other data")
    enc = ["train-encoder", "--generator", random_generator_path, "--out", tmp_path / "enc", "--batch", 2]
    ok_cli(capsys, *enc, "--data", real_frames_zip32, "--steps", 1)
    code, _, err = run_cli(capsys, *enc, "--data", other, "--steps", 2, "--resume")
    assert code == 1
    one_line_error(err, str(other), "trained on other data")


# -- 10. smaller holes ---------------------------------------------------------------------------------
def test_box_outside_the_frame_is_refused(shared, tmp_path, capsys):
    video = shared / "data" / "videos" / "dreamtalk_mead" / "M030_front_neutral_level1_001.mp4"
    code, _, err = run_cli(capsys, "preprocess", video, "--out", tmp_path / "a.zip", "--landmarks", "none",
                           "--box", "-500,-500,100,100", "--max-frames", 2, "--size", 32)
    assert code == 1
    one_line_error(err, str(video), "outside")
    assert list(tmp_path.iterdir()) == []


def test_inputs_of_the_wrong_kind_are_named(motion_path, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an encoder")
    latents = motion_path.parent.parent / "latents.h5"
    code, _, err = run_cli(capsys, "train-motion", "--latents", latents, "--out", tmp_path / "m",
                           "--encoder", notes, "--steps", 1, "--window", 8, "--batch", 2)
    assert code == 1
    one_line_error(err, str(notes))
    folder = tmp_path / "frames"
    folder.mkdir()
    code, _, err = run_cli(capsys, "train-image", "--data", folder, "--out", tmp_path / "r")
    assert code == 1
    one_line_error(err, str(folder), "is a folder")


def test_latent_store_problems_are_named_exactly(random_generator_path, encoder_path, real_frames_zip32,
                                                 tmp_path, capsys):
    import h5py

    store = tmp_path / "l.h5"
    ok_cli(capsys, "invert", "--generator", random_generator_path, "--encoder", encoder_path,
           "--data", real_frames_zip32, "--out", store)
    v99, empty = tmp_path / "v99.h5", tmp_path / "empty.h5"
    shutil.copy(store, v99)
    shutil.copy(store, empty)
    with h5py.File(v99, "r+") as f:
        f.attrs["version"] = 99
    with h5py.File(empty, "r+") as f:
        del f["clips"]
    for path, words in ((v99, ("version 99 is newer",)), (empty, ("no /clips group",))):
        code, _, err = run_cli(capsys, "reconstruct", "--latents", path, "--out", tmp_path / "r.mp4")
        assert code == 1
        one_line_error(err, str(path), *words)


def test_trainer_full_disk_one_line_no_checkpoint(small_disk_ok, motion_path, tmp_path):
    disk = tmp_path / "disk"
    latents = motion_path.parent.parent / "latents.h5"
    code, err, left = run_on_small_disk(disk, 48, "train-motion", "--latents", latents, "--out", disk / "run",
                                        "--steps", 2, "--batch", 2, "--window", 8, "--device", "cpu")
    assert code == 1, err
    one_line_error(err, str(disk / "run" / "checkpoints" / "latest.pt"), "no space left on device")
    assert not [p for p in left if p.endswith(".pt") or ".tmp" in p], left  # no checkpoint, no temporary


def test_demo_with_a_missing_video_or_photo_says_which(tmp_path, capsys):
    for opt in ("--video", "--photo"):
        missing = tmp_path / f"missing{opt.strip('-')}.mp4"
        code, _, err = run_cli(capsys, "demo", "--stage", "input", "--out", tmp_path / "d", opt, missing)
        assert code == 1
        one_line_error(err, str(missing), "does not exist")
