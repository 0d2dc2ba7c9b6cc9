"""StyleInV training on real latents: first-frame reconstruction, latent FD, image mode, CLI, resume."""
from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from svgen.stage2_motion.styleinv.train import StyleInVTrainConfig, StyleInVTrainer, train_styleinv
from svgen.utils.errors import SvgenError


@pytest.fixture(scope="module")
def assets(tiny_generator_path: Path, real_frames_zip32: Path, tmp_path_factory) -> dict:
    """A W encoder trained (100 steps, as the inversion tests) against the tiny generator, and the W
    latents of the real MEAD frames (2 clips x 60 frames) inverted with it: StyleInV's real latents."""
    from svgen.inversion.api import invert_dataset
    from svgen.inversion.encoders import load_encoder
    from svgen.inversion.train import train_encoder
    from svgen.stage1_image_gan.checkpoints import load_generator
    from svgen.utils.io import file_sha256

    root = tmp_path_factory.mktemp("styleinv")
    enc = train_encoder(tiny_generator_path, root / "encoder", real_frames_zip32, space="w", steps=100, batch=8,
                        seed=0, device="cpu", show_progress=False)
    G = load_generator(tiny_generator_path)
    E = load_encoder(enc)
    lat = invert_dataset(G, E, real_frames_zip32, root / "latents.h5",
                         generator_sha256=file_sha256(tiny_generator_path), encoder_sha256=file_sha256(enc),
                         show_progress=False)
    return {"generator": tiny_generator_path, "encoder": enc, "latents": lat, "data": real_frames_zip32,
            "root": root}


def _cfg(assets: dict, out: Path, **kw) -> StyleInVTrainConfig:
    base = dict(latents=str(assets["latents"]), out=str(out), generator=str(assets["generator"]),
                encoder=str(assets["encoder"]), batch=4, steps=2, snapshot_every=1000, log_every=1,
                eval_windows=24, eval_window=12, device="cpu")
    base.update(kw)
    return StyleInVTrainConfig(**base)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_latent_mode_learns_first_frame_and_lowers_latent_fd(assets: dict, tmp_path: Path) -> None:
    """A short latent-mode run on real latents: frame 0 reconstructs w0 and the latent Fréchet
    distance between EMA trajectories and real windows drops below its value at initialisation."""
    out = tmp_path / "latent"
    # short-run settings: lr x10 and λ_adv = 0.1 (StyleInV's TaiChi setting) so 60 steps show the trend
    cfg = _cfg(assets, out, steps=60, batch=4, lr_si=1e-3, lambda_adv=0.1, ema_kimg=0.02, ema_rampup=None,
               snapshot_every=30, eval_windows=48)
    path = train_styleinv(cfg)
    m = _metrics(out)
    print("latent-mode run:", [(r["step"], round(r["latent_fd"], 2), round(r["first_frame_rms"], 4)) for r in m])
    first, last = m[0], m[-1]
    assert [r["step"] for r in m] == [0, 30, 60]
    assert last["first_frame_rms"] < 0.6 * first["first_frame_rms"], (first, last)
    assert last["latent_fd"] < first["latent_fd"], (first, last)
    ck = torch.load(path, weights_only=True)
    assert ck["format"] == "svgen-motion" and ck["model"] == "styleinv"
    assert ck["meta"]["init"]["head"] and ck["meta"]["init"]["encoder_space"] == "w"
    assert any(out.joinpath("samples").glob("preview-*.png"))


def test_image_mode_step_runs_end_to_end(assets: dict, tmp_path: Path) -> None:
    """Image mode: frames rendered through the frozen generator, real frames from aligned.zip, the
    clip discriminator with per-frame blocks and ADA; one step (with R1) on CPU."""
    out = tmp_path / "image"
    cfg = _cfg(assets, out, disc="image", data=str(assets["data"]), steps=1, batch=2, ada=True,
               eval_windows=4, eval_window=4)
    tr = StyleInVTrainer(cfg)
    tr.augment.p.fill_(0.3)
    d_before = [p.detach().clone() for p in tr.D.parameters()]
    si_before = [p.detach().clone() for p in tr.si.parameters()]
    stats = tr.train_step()
    assert all(np.isfinite(v) for v in stats.values()) and "r1" in stats
    assert any(not torch.equal(a, b) for a, b in zip(d_before, tr.D.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(si_before, tr.si.parameters()))
    assert tr.D.frame_resolutions == [32] and tr.D.clip_resolutions == [16, 8]   # concatenated at 16²
    path = tr.export()
    assert torch.load(path, weights_only=True)["config"]["d"]["mode"] == "image"


def test_cli_train_resume_sample_and_animate(assets: dict, shared: Path, tmp_path: Path, monkeypatch) -> None:
    from svgen.cli.main import main
    from svgen.stage2_motion import load_motion
    from svgen.stage2_motion.styleinv import train as styleinv_train

    @dataclasses.dataclass
    class SmallEval(StyleInVTrainConfig):   # smaller latent-FD evaluations (speed only)
        eval_windows: int = 8
        eval_window: int = 8

    monkeypatch.setattr(styleinv_train, "StyleInVTrainConfig", SmallEval)

    out = tmp_path / "cli"
    args = ["train-motion", "--model", "styleinv", "--latents", str(assets["latents"]), "--generator",
            str(assets["generator"]), "--encoder", str(assets["encoder"]), "--out", str(out), "--batch", "4",
            "--device", "cpu"]
    main(args + ["--steps", "1"])                  # returns normally on success (errors exit 1)
    assert (out / "motion.pt").exists() and (out / "checkpoints" / "latest.pt").exists()
    main(args + ["--steps", "2", "--resume"])
    # resuming gives the weights of an uninterrupted run
    ref = train_styleinv(_cfg(assets, tmp_path / "ref", steps=2, snapshot_every=1))
    a = torch.load(out / "motion.pt", weights_only=True)
    b = torch.load(ref, weights_only=True)
    for k in a["SI"]:
        torch.testing.assert_close(a["SI"][k], b["SI"][k], rtol=0, atol=1e-6)

    M = load_motion(out / "motion.pt")
    assert M.model_name == "styleinv" and (M.num_ws, M.w_dim) == (8, 128)
    ws = M.sample(2, 20, seed=5)
    assert ws.shape == (2, 20, 8, 128) and torch.isfinite(ws).all()
    assert torch.equal(ws[:, :, 0], ws[:, :, 7])                      # W codes broadcast to W+
    torch.testing.assert_close(M.sample(2, 10, seed=5), ws[:, :10], rtol=0, atol=1e-5)  # extension
    w_id = ws[0, 3].numpy()
    a25 = M.animate_latents(w_id, 10, fps=25.0, seed=1)
    a50 = M.animate_latents(w_id, 20, fps=50.0, seed=1)
    slow = M.animate_latents(w_id, 20, fps=25.0, seed=1, slowmo=2.0)
    assert a25.shape == (10, 8, 128) and a25.dtype == np.float32
    np.testing.assert_allclose(a50[::2], a25, atol=1e-5)              # 50 fps = same motion, sampled twice as often
    np.testing.assert_allclose(slow, a50, atol=1e-5)                  # slow motion x2 = the same times
    assert not np.allclose(a50[1::2], a25, atol=1e-3)                 # in-between frames are new

    # svgen sample / svgen animate take the StyleInV checkpoint (generator and encoder from it)
    main(["sample", "--motion", str(out / "motion.pt"), "--num", "2", "--frames", "12", "--out",
          str(tmp_path / "samples"), "--seed", "5", "--device", "cpu"])
    np.testing.assert_allclose(np.load(tmp_path / "samples" / "latents.npy")[:, :10], ws[:, :10].numpy(), atol=1e-5)
    photo = shared / "data" / "photos" / "hyperstyle_aligned" / "blunt.jpg"
    video = tmp_path / "anim.mp4"
    main(["animate", "--identity", str(photo), "--motion", str(out / "motion.pt"), "--frames", "16", "--fps", "50",
          "--slowmo", "2", "--out", str(video), "--device", "cpu"])
    from svgen.preprocessing.video_io import probe

    info = probe(video)
    assert info.num_frames == 16 and abs(info.fps - 50) < 1e-3
    settings = json.loads(video.with_suffix(".json").read_text())
    assert settings["motion"][0]["training_frames_per_output_frame"] == pytest.approx(0.25)


def test_bad_inputs_fail_with_one_clear_line(assets: dict, tmp_path: Path) -> None:
    from svgen.inversion.latent_store import LatentStoreWriter

    with pytest.raises(SvgenError, match="--data"):
        StyleInVTrainer(_cfg(assets, tmp_path / "a", disc="image"))
    other = tmp_path / "other.h5"
    w = LatentStoreWriter(other, space="w", num_ws=8, w_dim=128, generator_sha256="0" * 64)
    w.create_clip("c", 10)
    w.write("c", 0, np.zeros((10, 128), np.float32))
    w.finalize()
    with pytest.raises(SvgenError, match="another generator"):
        StyleInVTrainer(_cfg(assets, tmp_path / "b", latents=str(other)))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SvgenError):
        StyleInVTrainer(_cfg(assets, blocker / "run"))
    with pytest.raises(SvgenError, match="--resume"):
        StyleInVTrainer(_cfg(assets, tmp_path / "fresh"), resume=True)
    short = tmp_path / "short.h5"
    from svgen.utils.io import file_sha256

    w = LatentStoreWriter(short, space="w", num_ws=8, w_dim=128, generator_sha256=file_sha256(assets["generator"]))
    w.create_clip("c", 2)
    w.write("c", 0, np.zeros((2, 128), np.float32))
    w.finalize()
    with pytest.raises(SvgenError, match="shorter than 3 frames"):
        StyleInVTrainer(_cfg(assets, tmp_path / "c", latents=str(short)))
    assert not (tmp_path / "c" / "motion.pt").exists()


def test_disc_help_names_the_papers_setting():
    from click.testing import CliRunner

    from svgen.cli.main import cli

    out = " ".join(CliRunner().invoke(cli, ["train-motion", "--help"]).output.split())
    assert "Default latent" in out and "not the paper's setting" in out
    assert "The paper's setting is --disc image" in out


def _wplus_store(path: Path, generator: Path, clips: list[np.ndarray]) -> Path:
    from svgen.inversion.latent_store import LatentStoreWriter
    from svgen.utils.io import file_sha256

    w = LatentStoreWriter(path, space="w+", num_ws=clips[0].shape[1], w_dim=clips[0].shape[2],
                          generator_sha256=file_sha256(generator))
    for i, c in enumerate(clips):
        w.create_clip(f"c{i}", len(c))
        w.write(f"c{i}", 0, c.astype(np.float32))
    w.finalize()
    return path


def test_wplus_store_motion_lost_by_the_layer_mean_is_measured_and_warned(assets: dict, tmp_path: Path) -> None:
    """StyleInV trains on a W+ store's mean over layers: where the layers move alike it keeps all
    the motion; where each layer moves on its own about 1/sqrt(num_ws) of it, and training warns
    (the demo's store keeps 37 %, and its mouth then moves 0.35x as much)."""
    from svgen.stage2_motion.styleinv.data import LatentClips, LayerMeanWarning, motion_kept_by_layer_mean

    rng = np.random.default_rng(0)
    base = rng.normal(size=(1, 8, 128))
    alike = [base + rng.normal(size=(n, 1, 128)) for n in (40, 25)]              # every layer the same motion
    apart = [base + rng.normal(size=(n, 8, 128)) for n in (40, 25)]              # each layer its own motion
    half = [0.5 * (a + b) for a, b in zip(alike, apart)]
    assert motion_kept_by_layer_mean(alike) == pytest.approx(1.0, abs=1e-9)
    assert motion_kept_by_layer_mean(apart) == pytest.approx(8 ** -0.5, rel=0.05)
    # streamed over chunks of 7 frames (as LatentClips reads the store) = the same figure at once
    store = _wplus_store(tmp_path / "half.h5", assets["generator"], half)
    assert LatentClips(store, chunk=7).motion_kept == pytest.approx(motion_kept_by_layer_mean(half), rel=1e-9)

    store = _wplus_store(tmp_path / "apart.h5", assets["generator"], apart)
    with pytest.warns(LayerMeanWarning, match=r"apart\.h5.*keeps only 3[45] % of its motion"):
        tr = StyleInVTrainer(_cfg(assets, tmp_path / "run", latents=str(store)))
    assert tr.latents_ref()["motion_kept"] == pytest.approx(8 ** -0.5, rel=0.05)
    store = _wplus_store(tmp_path / "alike.h5", assets["generator"], alike)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayerMeanWarning)
        tr = StyleInVTrainer(_cfg(assets, tmp_path / "run2", latents=str(store)))
    assert tr.latents_ref()["motion_kept"] == pytest.approx(1.0, abs=1e-6)
    assert LatentClips(assets["latents"]).motion_kept == 1.0                     # a W store keeps it all
