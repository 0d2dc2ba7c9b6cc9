"""The Makefile names each animation after its photo and model (``make -n``: nothing is run)."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from svgen.demo.layout import Paths, animation_path

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _make_n(*args: str) -> str:
    r = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(REPO), *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture
def work(tmp_path: Path) -> dict:
    """A work folder whose artifacts are all up to date (each newer than its inputs), two photos."""
    venv = tmp_path / "venv"
    w = tmp_path / "work"
    files = [venv / ".svgen-installed", tmp_path / "a.jpg", tmp_path / "b.jpg", w / "aligned.zip",
             w / "image" / "generator.pt", w / "encoder" / "encoder.pt", w / "encoder_w" / "encoder.pt",
             w / "latents.h5", w / "motion_gru" / "motion.pt", w / "motion_styleinv" / "motion.pt"]
    start = max(time.time(), (REPO / "pyproject.toml").stat().st_mtime) + 10
    for i, f in enumerate(files):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x")
        os.utime(f, (start + i, start + i))
    return {"venv": str(venv), "work": w, "a": tmp_path / "a.jpg", "b": tmp_path / "b.jpg", "t": start + 100}


def test_animate_output_is_named_after_photo_and_model(work):
    w = work["work"]
    out = _make_n("animate", f"VENV={work['venv']}", f"WORK={w}", f"PHOTO={work['a']}")
    assert f"--out {w}/animation_a_gru.mp4" in out and "train-motion" not in out   # only the animation is due
    out = _make_n("animate", f"VENV={work['venv']}", f"WORK={w}", f"PHOTO={work['a']}", "MODEL=styleinv")
    assert f"--out {w}/animation_a_styleinv.mp4" in out
    assert f"--encoder {w}/encoder_w/encoder.pt" in out


def test_second_photo_gets_its_own_animation(work):
    w = work["work"]
    done = w / "animation_a_gru.mp4"                      # photo a was animated already
    done.write_bytes(b"x")
    os.utime(done, (work["t"], work["t"]))
    again = _make_n("animate", f"VENV={work['venv']}", f"WORK={w}", f"PHOTO={work['a']}")
    assert "animate --identity" not in again                                        # up to date
    other = _make_n("animate", f"VENV={work['venv']}", f"WORK={w}", f"PHOTO={work['b']}")
    assert f"--identity {work['b']}" in other and f"--out {w}/animation_b_gru.mp4" in other


def test_demo_runner_uses_the_makefile_names(tmp_path):
    paths = Paths(tmp_path / "demo")
    for model in ("gru", "styleinv"):
        out = _make_n("animate", f"WORK={paths.root}", f"PHOTO={paths.photo}", f"MODEL={model}",
                      "--assume-old=" + str(paths.photo))
        assert f"--out {paths.animation[model]}" in out
        assert paths.animation[model] == animation_path(paths.root, paths.photo, model)
    assert paths.animation["gru"].name == "animation_identity_gru.mp4"


def test_make_help_lists_every_variable_with_its_value():
    import re

    names = re.findall(r"^([A-Z_]+)\s*\?=", (REPO / "Makefile").read_text(), re.M)
    assert {"VIDEO", "PHOTO", "IMAGE_KIMG", "MOTION_EPOCHS", "STYLEINV_STEPS", "FRAMES", "SPACE"} <= set(names)
    out = _make_n("help").replace("\n", " ")                      # -n still prints echo lines
    missing = [n for n in names if f"{n}=" not in out]
    assert not missing, f"make help does not list {missing}"
    shown = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(REPO), "help", "FRAMES=7"],
                           capture_output=True, text=True, timeout=60).stdout
    assert "FRAMES=7 " in shown                                   # the current value, not a copy of the default


def test_first_hour_budget_is_the_demo_budget():
    """`make help` and the README's first-hour recipe carry the demo's budget (svgen.demo.layout)."""
    from svgen.demo.layout import DemoConfig, make_vars

    budget = make_vars(DemoConfig())
    assert budget in subprocess.run(["make", "-s", "--no-print-directory", "-C", str(REPO), "help"],
                                    capture_output=True, text=True, timeout=60).stdout
    assert budget in (REPO / "README.md").read_text().split("## Your first hour", 1)[1]
