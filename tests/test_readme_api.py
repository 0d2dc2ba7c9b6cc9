"""The README's Python API block runs as written (on tiny real components: an untrained 32 px
generator and encoder and a GRU trained for two steps on latents of real frames)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from motionchain import build_motion_chain

REPO = Path(__file__).resolve().parents[1]


def readme_api_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "README has no python block under '## Python API'"
    return m.group(1)


@pytest.fixture(scope="module")
def artifacts(random_generator_path, real_frames_zip32, tmp_path_factory):
    """A folder holding generator.pt, encoder.pt and motion.pt, as the README's block expects."""
    d = tmp_path_factory.mktemp("readme")
    _, _, motion, G = build_motion_chain(random_generator_path, real_frames_zip32, d)
    (d / "generator.pt").symlink_to(random_generator_path)
    (d / "motion.pt").symlink_to(motion)
    return d, G


def test_readme_api_block_runs(artifacts, monkeypatch):
    folder, G = artifacts
    monkeypatch.chdir(folder)
    ns: dict = {}
    exec(compile(readme_api_block(), "README.md (Python API)", "exec"), ns)
    R, num_ws, w_dim = G.img_resolution, G.num_ws, G.w_dim
    assert ns["ws"].shape == (4, num_ws, w_dim) and ns["ws_rec"].shape == (4, num_ws, w_dim)
    assert ns["img"].shape == (4, 3, R, R) and ns["img"].abs().max() <= 1
    assert ns["traj"].shape == (2, 50, num_ws, w_dim)
    assert ns["uint8"].shape == (50, 3, R, R) and ns["uint8"].dtype == torch.uint8
