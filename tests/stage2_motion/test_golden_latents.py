"""Same seeds, same latents: ``svgen animate`` and ``svgen sample`` must write byte-identical ``.npy``
files to the ones the reference code wrote (tests/data/golden_motion: the checkpoints made with
``make_golden.py`` at main 3a1622c; the ``.npy`` references and the long cases' sha256, which cross the
streaming chunk boundaries, written by ab8e526, before the pipeline layer's streaming generation).

Every command runs in a child process in the reference arithmetic (``tests/reference_arithmetic.py``:
ATen's baseline kernels, MKL's ``COMPATIBLE`` mode, one thread, no oneDNN or NNPACK), so the bits do not
depend on the x86-64 CPU; with the CPU's own kernels the StyleInV and driving cases wrote other bits
when MKL and oneDNN were capped at AVX. The references were recorded in that mode by ab8e526's code.

The checkpoints there are files written by that code, so this also proves that old ``motion.pt``,
``generator.pt`` and ``encoder.pt`` files still load. ``SVGEN_WRITE_GOLDEN=1`` rewrites the ``.npy``
references (only ever with the reference code checked out)."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reference_arithmetic import CANNOT_PIN

LAUNCHER = Path(__file__).resolve().parents[1] / "reference_arithmetic.py"

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden_motion"
MEAD = "dreamtalk_mead/M030_front_neutral_level1_001.mp4"

# name -> (command, arguments); {photo}, {video}, {gru}, {styleinv}, {gen}, {enc}, {out} are filled in
CASES = {
    "animate_gru_pca_grid": ("animate", "--identity {photo} --motion {gru} --generator {gen} --encoder {enc} --frames 9 --fps 20 --seed 3 --grid 2 "
                             "--offset pca --tune none --landmarks none --out {out}.mp4"),
    "animate_gru_mean_layers": ("animate", "--identity {photo} --motion {gru} --generator {gen} --encoder {enc} --frames 7 --seed 5 --offset mean "
                                "--offset-layers 0-3 --offset-strength 0.5 --tune none --landmarks none "
                                "--out {out}.mp4"),
    "animate_styleinv": ("animate", "--identity {photo} --motion {styleinv} --encoder {enc} --frames 8 --fps 50 --seed 1 "
                         "--tune none --landmarks none --out {out}.mp4"),
    "animate_driving": ("animate", "--identity {photo} --driving {video} --generator {gen} --encoder {enc} "
                        "--frames 10 --tune none --landmarks none --offset pca --out {out}.mp4"),
    "sample_gru": ("sample", "--motion {gru} --num 3 --frames 11 --seed 7 --out {out}"),
    "sample_styleinv": ("sample", "--motion {styleinv} --num 2 --frames 9 --seed 4 --generator {gen} --out {out}"),
}
# long runs cross the streaming chunks (256 frames; GRU 1 + 256 + ..., StyleInV 64, driving inversion 16):
# compared through the sha256 of the .npy the reference code wrote (the files are MBs)
LONG_CASES = {
    "animate_gru_long_resampled": ("animate", "--identity {photo} --motion {gru} --generator {gen} --encoder {enc} "
                                   "--frames 700 --fps 15 --seed 2 --grid 2 --offset naive --tune none "
                                   "--landmarks none --edit {dirs}:0:2:ramp=100-400 --out {out}.mp4"),
    "animate_styleinv_long_mean": ("animate", "--identity {photo} --motion {styleinv} --encoder {enc} --frames 300 "
                                   "--slowmo 2 --offset mean --tune none --landmarks none --out {out}.mp4"),
    "animate_driving_long": ("animate", "--identity {photo} --driving {video} --generator {gen} --encoder {enc} "
                             "--frames 90 --tune none --landmarks none --offset pca --out {out}.mp4"),
    "sample_gru_long": ("sample", "--motion {gru} --num 3 --frames 600 --seed 9 --out {out}"),
}
LONG_SHA256 = {   # written by the reference code (ab8e526: before streaming), SVGEN_WRITE_GOLDEN=1 prints them
    "animate_driving_long": "4a489ed48f2fb89f98e9f3458727091096818578f635291bf1948b38cd7fe1df",
    "animate_gru_long_resampled": "d750d7b7568e54595563a8c25213a12e955b0001ea675bbdb4b3a9b021ed0b93",
    "animate_styleinv_long_mean": "ddf143561d8e4b8c2b4320f7ed22623cb8c444593c6ce091ce2c4afc607d0891",
    "sample_gru_long": "241ed79f683bb4e5e9bc5298a7ea20dd8231fd563added7cd91c4bb46c9a89c9",
}


@pytest.fixture(scope="module")
def golden(tmp_path_factory) -> Path:
    """A copy of the fixture folder (motion.pt records its generator/encoder next to itself)."""
    if not (GOLDEN / "gru.pt").is_file():
        pytest.fail(f"{GOLDEN} holds no fixtures: run make_golden.py")
    dst = tmp_path_factory.mktemp("golden") / "models"
    shutil.copytree(GOLDEN, dst)
    return dst


def _run(name, command, args, golden, shared, tmp_path) -> Path:
    """Run one case in the reference arithmetic; the path of the .npy it wrote."""
    fill = {"photo": shared / "data" / "photos" / "hyperstyle_aligned" / "pitt.jpg",
            "video": shared / "data" / "videos" / MEAD, "gru": golden / "gru.pt",
            "styleinv": golden / "styleinv.pt", "gen": golden / "generator.pt", "enc": golden / "encoder.pt",
            "dirs": golden / "dirs.npy", "out": tmp_path / name}
    proc = subprocess.run([sys.executable, str(LAUNCHER), command, *args.format(**fill).split(), "--device", "cpu"],
                          capture_output=True, text=True, timeout=600)   # the launcher pins its own environment
    if proc.returncode == CANNOT_PIN:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, f"{name}: exit {proc.returncode}: {proc.stderr[-2000:]}"
    return tmp_path / (f"{name}.npy" if command == "animate" else f"{name}/latents.npy")


@pytest.mark.parametrize("name", sorted(LONG_CASES))
def test_long_runs_streamed_in_chunks_give_the_same_latents(name, golden, shared, tmp_path):
    npy = _run(name, *LONG_CASES[name], golden, shared, tmp_path)
    got = hashlib.sha256(npy.read_bytes()).hexdigest()
    if os.environ.get("SVGEN_WRITE_GOLDEN") == "1":
        print(f"{name!r}: {got!r},")
        return
    assert got == LONG_SHA256[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_seed_gives_byte_identical_latents(name, golden, shared, tmp_path):
    npy = _run(name, *CASES[name], golden, shared, tmp_path)
    ref = GOLDEN / f"{name}.npy"
    if os.environ.get("SVGEN_WRITE_GOLDEN") == "1":
        shutil.copyfile(npy, ref)
    expected = np.load(ref)
    got = np.load(npy)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert npy.read_bytes() == ref.read_bytes(), \
        f"{name}: latents differ (max |diff| {np.abs(got.astype(np.float64) - expected).max():.3g})"
