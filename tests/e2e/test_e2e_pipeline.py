"""End to end: a real talking-head clip and a real photo through every stage, with the same
commands a user types (via the demo runner), then the results page in a headless browser."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from svgen.demo.layout import DemoConfig, Paths
from svgen.pipeline.demo import run_demo

CLIP = "videos/dpe/s.mp4"
PHOTO = "photos/hyperstyle_aligned"


def _first_photo(shared: Path) -> Path:
    photos = sorted(p for p in (shared / "data" / PHOTO).iterdir() if p.suffix.lower() in (".jpg", ".png"))
    return photos[0]


@pytest.fixture(scope="module")
def pipeline(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Paths:
    """Run the whole pipeline once at the smallest sizes (32 px, tiny nets, few steps)."""
    out = tmp_path_factory.mktemp("e2e") / "work"
    cfg = DemoConfig(size=32, image_kimg=0.3, encoder_kimg=0.3, encoder_w_kimg=0.2, refine_steps=5, motion_epochs=2,
                     styleinv_steps=4, frames=30, fps=25.0, styleinv=True)
    run_demo(out, cfg, video=shared / "data" / CLIP, photo=_first_photo(shared), device="cpu", seed=1)
    return Paths(out)


@pytest.mark.slow
def test_every_artifact_has_its_format(pipeline: Paths) -> None:
    import torch

    from svgen import load_encoder, load_generator, load_motion
    from svgen.inversion.latent_store import LatentStore
    from svgen.preprocessing.dataset import AlignedDataset
    from svgen.utils.io import file_sha256

    ds = AlignedDataset(pipeline.aligned)
    assert ds.resolution == 32 and len(ds) > 100
    meta = ds.meta["clips"][next(iter(ds.clips))]
    assert len(meta["frames"][0]["quad"]) == 4 and "detected" in meta["frames"][0]

    G = load_generator(pipeline.generator)
    assert G.img_resolution == 32
    E = load_encoder(pipeline.encoder)
    assert E.space == "w+" and E.num_ws == G.num_ws

    with LatentStore(pipeline.latents) as st:
        assert st.generator_sha256 == file_sha256(pipeline.generator)
        assert st.total_frames == len(ds)
        w = st.read(st.clips[0], 0, 4)
        assert w.shape == (4, G.num_ws, G.w_dim) and np.isfinite(w).all()

    for model in ("gru", "styleinv"):
        M = load_motion(pipeline.motion[model])
        assert M.model_name == model
        traj = M.sample(2, 12, seed=0)
        assert tuple(traj.shape) == (2, 12, G.num_ws, G.w_dim) and torch.isfinite(traj).all()


@pytest.mark.slow
def test_animation_mp4_decodes_with_requested_frames(pipeline: Paths) -> None:
    from svgen.preprocessing.video_io import iter_frames, probe

    for model, mp4 in pipeline.animation.items():
        info = probe(mp4)
        assert info.fps == pytest.approx(25.0)
        frames = list(iter_frames(mp4))
        assert len(frames) == 30, model
        assert frames[0].std() > 1.0  # not a blank video
        settings = json.loads(mp4.with_suffix(".json").read_text())
        assert settings["resolved"]["frames"] == 30 and settings["outputs"]["frames_written"] == 30
        assert np.load(mp4.with_suffix(".npy")).shape[:2] == (1, 30)


@pytest.mark.slow
def test_metrics_json_has_values(pipeline: Paths) -> None:
    for model in ("gru", "styleinv"):
        report = json.loads((pipeline.report / f"metrics_{model}.json").read_text())
        text = json.dumps(report)
        assert "latent_fd" in text and "loop" in text
        assert report["inputs"]["animation"]["frames"] == 16   # --identity-frames: evenly spaced frames
        values = [float(v) for v in re.findall(r'"value": (-?[0-9.eE+-]+)', text)]
        assert values and all(np.isfinite(values))


@pytest.mark.slow
def test_results_page_says_whether_it_worked(pipeline: Paths) -> None:
    """The verdict table: every target with its goal, references from the same run and a verdict."""
    checks = {c["key"]: c for c in json.loads((pipeline.report / "targets.json").read_text())["checks"]}
    assert {"generator_faces", "reconstruction_psnr", "faces_gru", "identity_gru", "motion_gru", "mouth_gru",
            "faces_styleinv", "identity_styleinv", "motion_styleinv"} <= set(checks)
    assert checks["generator_faces"]["references"]["real aligned frames"] >= 90       # dlib sees real frames
    motion = checks["motion_gru"]["references"]
    assert motion["real halves"] < min(motion["frozen first frame"], motion["time-shuffled"])
    ident = checks["identity_gru"]["references"]
    assert ident["same-person threshold"] == 0.6
    # even at this toy budget, pivotal tuning puts a face of the photo's person in every frame:
    # closer to the photo than the training actor is
    for model in ("gru", "styleinv"):
        assert checks[f"faces_{model}"]["ok"], checks[f"faces_{model}"]
        assert checks[f"identity_{model}"]["value"] < ident["photo vs the training actor"], checks
    html = (pipeline.root / "index.html").read_text()
    assert "targets met" in html and html.count("<td class='good'>") + html.count("<td class='BAD'>") == len(checks)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
def test_results_page_loads_every_image_and_video(pipeline: Paths, tmp_path: Path) -> None:
    index = pipeline.root / "index.html"
    html = index.read_text()
    srcs = re.findall(r"<(?:img|video) src='([^']+)'", html)
    assert len(srcs) >= 6
    for s in srcs:
        assert (pipeline.root / s).is_file(), s
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on this machine (.ci/run installs Debian's chromium)")
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--allow-file-access-from-files",
         "--virtual-time-budget=10000", "--dump-dom", index.resolve().as_uri()],
        capture_output=True, text=True, timeout=120).stdout
    states = re.findall(r'<(?:img|video)[^>]*data-load="(ok|error)"', dom)
    assert len(states) == len(srcs), dom[:2000]
    assert all(s == "ok" for s in states), states
