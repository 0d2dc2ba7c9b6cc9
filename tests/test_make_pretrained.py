"""Bring your own generator: ``make ... GENERATOR=net.pkl`` converts it once into the work folder and
skips ``train-image`` (issue #15 item 4). The pickle is the tiny NVIDIA-layout network of the import
tests (``tests/stage1_image_gan/test_stage1_import.py``), written with their helpers."""
from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from svgen.stage1_image_gan.checkpoints import load_generator

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _import_helpers():
    path = REPO / "tests" / "stage1_image_gan" / "test_stage1_import.py"
    spec = importlib.util.spec_from_file_location("svgen_test_stage1_import", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


imp = _import_helpers()
nvidia_modules = imp.nvidia_modules   # the fixture that registers NVIDIA's stand-in modules


def _venv(tmp_path: Path) -> Path:
    """A venv folder for the Makefile whose ``svgen`` runs this interpreter on this checkout."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    script = venv / "bin" / "svgen"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} -m svgen.cli.main \"$@\"\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    stamp = venv / ".svgen-installed"
    stamp.write_bytes(b"")
    # newer than pyproject.toml (so make does not reinstall) but not in the future: outputs the chain
    # writes in its first seconds must count as newer than the install
    t = max(time.time() - 1, (REPO / "pyproject.toml").stat().st_mtime + 0.01)
    os.utime(stamp, (t, t))
    return venv


def _make(*args: str, dry: bool = False, timeout: int = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = ["make", "--no-print-directory", "-C", str(REPO)] + (["-n"] if dry else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_generator_variable_replaces_train_image_in_the_plan(tmp_path):
    w, pkl = tmp_path / "work", tmp_path / "ffhq.pkl"
    pkl.write_bytes(b"x")
    venv = _venv(tmp_path)
    r = _make("invert", "train-motion", "animate", f"VENV={venv}", f"WORK={w}", f"GENERATOR={pkl}",
              "VIDEO=talk.mp4", "PHOTO=me.jpg", "--assume-old=talk.mp4", "--assume-old=me.jpg", dry=True)
    assert r.returncode == 0, r.stderr
    conv = f"{w}/pretrained_ffhq/generator.pt"
    assert f"svgen convert {pkl} --out {conv}" in r.stdout
    assert "train-image" not in r.stdout and f"{w}/image/generator.pt" not in r.stdout
    for step in ("train-encoder", "invert", "train-motion", "animate --identity"):
        line = next(ln for ln in r.stdout.splitlines() if f"svgen {step}" in ln)
        assert f"--generator {conv}" in line, line
    r = _make("train-image", f"VENV={venv}", f"WORK={w}", f"GENERATOR={pkl}", dry=True)
    assert "svgen train-image" not in r.stdout and "train-image skipped" in r.stdout
    # without GENERATOR= the chain trains its own
    r = _make("invert", f"VENV={venv}", f"WORK={w}", "VIDEO=talk.mp4", "--assume-old=talk.mp4", dry=True)
    assert "svgen train-image" in r.stdout and f"--generator {w}/image/generator.pt" in r.stdout


@pytest.mark.slow
def test_make_chain_with_an_nvidia_pickle(shared, nvidia_modules, tmp_path):
    """The user's chain on a real clip with a converted NVIDIA pickle; no stage-1 training."""
    pkl = tmp_path / "tiny_ffhq.pkl"
    imp.write_nvidia_pkl(nvidia_modules, pkl)
    for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"):
        sys.modules.pop(name, None)   # the conversion runs in the make subprocess without them anyway
    w = tmp_path / "work"
    video = shared / "data" / "videos" / "dreamtalk_mead" / "W009_front_neutral_level1_001.mp4"
    photo = shared / "data" / "photos" / "face_recognition" / "obama.jpg"
    venv = _venv(tmp_path)
    small = ["SIZE=32", "ENCODER_KIMG=0.064", "MOTION_EPOCHS=2", "FRAMES=8", "FPS=25"]
    r = _make("invert", "train-motion", "animate", f"VENV={venv}", f"WORK={w}", f"GENERATOR={pkl}",
              f"VIDEO={video}", f"PHOTO={photo}", *small, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    conv = w / "pretrained_tiny_ffhq" / "generator.pt"
    assert not (w / "image").exists()                                   # train-image never ran
    assert (w / "latents.h5").is_file() and (w / "motion_gru" / "motion.pt").is_file()
    assert (w / "animation_obama_gru.mp4").stat().st_size > 0
    # the converted file is the pickle's network (same image), and the chain used it
    z = torch.randn(2, imp.Z, generator=torch.Generator().manual_seed(0))
    assert torch.equal(load_generator(conv)(z, noise_mode="const"), load_generator(pkl)(z, noise_mode="const"))
    from svgen.inversion.latent_store import LatentStore
    from svgen.utils.io import file_sha256

    with LatentStore(w / "latents.h5") as store:
        assert store.generator_sha256 == file_sha256(conv)
    # a second run has nothing to do (converted once)
    again = _make("invert", "train-motion", "animate", f"VENV={venv}", f"WORK={w}", f"GENERATOR={pkl}",
                  f"VIDEO={video}", f"PHOTO={photo}", *small, dry=True)
    assert again.returncode == 0 and "svgen" not in again.stdout, again.stdout
