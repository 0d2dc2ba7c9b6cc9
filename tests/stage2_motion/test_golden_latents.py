"""Same seeds, same latents: ``svgen animate`` and ``svgen sample`` must write byte-identical ``.npy``
files to the ones the code wrote when the fixtures were made (tests/data/golden_motion, made with
``make_golden.py`` at main 3a1622c, before the pipeline layer and streaming generation; the long
cases, which cross the streaming chunk boundaries, by their sha256 from ab8e526, before streaming).

The checkpoints there are files written by that code, so this also proves that old ``motion.pt``,
``generator.pt`` and ``encoder.pt`` files still load. ``SVGEN_WRITE_GOLDEN=1`` rewrites the ``.npy``
references (only ever with the reference code checked out)."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from clitools import ok_cli

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
    "animate_driving_long": "ac7bba85803a97db527fee8db96ee5f416121020aa933711a3b0a19214d59187",
    "animate_gru_long_resampled": "e7584dd8a52d1612a39082b12f19be3cde6b14fd751c083d71d30e8407b9d85a",
    "animate_styleinv_long_mean": "25767e55fecb78b4ded36cbcd828799bfad8450698d75f9fbb712b084d575c9a",
    "sample_gru_long": "81a0e322b9006e6b24429bf895e44f66624fe9288d063b26a80607f30e311623",
}


@pytest.fixture(scope="module")
def golden(tmp_path_factory) -> Path:
    """A copy of the fixture folder (motion.pt records its generator/encoder next to itself)."""
    if not (GOLDEN / "gru.pt").is_file():
        pytest.fail(f"{GOLDEN} holds no fixtures: run make_golden.py")
    dst = tmp_path_factory.mktemp("golden") / "models"
    shutil.copytree(GOLDEN, dst)
    return dst


def _run(name, command, args, golden, shared, tmp_path, capsys) -> Path:
    """Run one case; the path of the .npy it wrote."""
    fill = {"photo": shared / "data" / "photos" / "hyperstyle_aligned" / "pitt.jpg",
            "video": shared / "data" / "videos" / MEAD, "gru": golden / "gru.pt",
            "styleinv": golden / "styleinv.pt", "gen": golden / "generator.pt", "enc": golden / "encoder.pt",
            "dirs": golden / "dirs.npy", "out": tmp_path / name}
    ok_cli(capsys, command, *args.format(**fill).split(), "--device", "cpu")
    return tmp_path / (f"{name}.npy" if command == "animate" else f"{name}/latents.npy")


@pytest.mark.parametrize("name", sorted(LONG_CASES))
def test_long_runs_streamed_in_chunks_give_the_same_latents(name, golden, shared, tmp_path, capsys):
    npy = _run(name, *LONG_CASES[name], golden, shared, tmp_path, capsys)
    got = hashlib.sha256(npy.read_bytes()).hexdigest()
    if os.environ.get("SVGEN_WRITE_GOLDEN") == "1":
        print(f"{name!r}: {got!r},")
        return
    assert got == LONG_SHA256[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_seed_gives_byte_identical_latents(name, golden, shared, tmp_path, capsys):
    npy = _run(name, *CASES[name], golden, shared, tmp_path, capsys)
    ref = GOLDEN / f"{name}.npy"
    if os.environ.get("SVGEN_WRITE_GOLDEN") == "1":
        shutil.copyfile(npy, ref)
    expected = np.load(ref)
    got = np.load(npy)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert npy.read_bytes() == ref.read_bytes(), \
        f"{name}: latents differ (max |diff| {np.abs(got.astype(np.float64) - expected).max():.3g})"
