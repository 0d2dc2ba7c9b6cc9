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


def run_on_small_disk(disk: Path, size_kb: int, *args: object,
                      fill_kb: int = 0) -> tuple[int, str, list[str]]:
    """Run ``svgen ARGS`` with a ``size_kb`` tmpfs mounted on ``disk`` (pre-filled with ``fill_kb``
    of zeros); returns (exit status, stderr, what the command left on the disk). The mount is
    private to the child, so it vanishes with it."""
    disk.mkdir(parents=True, exist_ok=True)
    fill = f"head -c {fill_kb * 1024} /dev/zero > {disk}/filler && " if fill_kb else ""
    script = (f"mount -t tmpfs -o size={size_kb}k tmpfs {disk} && {fill}"
              f"\"$@\" >/dev/null; rc=$?; echo @@LEFT@@; ls -A {disk}; exit $rc")
    env = dict(os.environ, PYTHONPATH=str(REPO), SVGEN_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", sys.executable, "-m",
                           "svgen.cli.main", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)
    left = proc.stdout.split("@@LEFT@@", 1)[-1].split()
    return proc.returncode, proc.stderr, [n for n in left if n != "filler"]


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
