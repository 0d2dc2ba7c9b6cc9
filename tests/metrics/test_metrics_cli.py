"""``svgen evaluate`` end to end: a tiny GRU motion model and latent store written by the test,
the report's values/protocol/versions, plots from metrics.jsonl, the identity metric on a real
video, and one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from svgen.cli.main import main
from svgen.inversion.latent_store import LatentStore, LatentStoreWriter
from svgen.utils.io import file_sha256
from svgen.utils.logging import JsonlLogger

NUM_WS, W_DIM = 4, 16


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def _cli_ok(args, capsys):
    try:
        main(args)
    except SystemExit as exc:  # pragma: no cover - failure path shows stderr
        raise AssertionError(f"exit {exc.code}: {capsys.readouterr().err}") from None
    return capsys.readouterr()


@pytest.fixture(scope="module")
def motion_files(tmp_path_factory):
    """latents.h5 with smooth synthetic W+ trajectories and an (untrained) tiny GRU motion.pt."""
    from svgen.stage2_motion.gru.model import GRUMotionConfig, MotionGenerator
    from svgen.stage2_motion.offset import fit_pca_from_store
    from svgen.stage2_motion.gru.train import GRUTrainConfig, motion_checkpoint

    d = tmp_path_factory.mktemp("motion")
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((3, NUM_WS * W_DIM))
    w = LatentStoreWriter(d / "latents.h5", space="w+", num_ws=NUM_WS, w_dim=W_DIM, generator_sha256="")
    for c in range(2):
        t = np.arange(120)[:, None]
        codes = np.sin(t * rng.uniform(0.05, 0.2, 3) + rng.uniform(0, 6, 3)) @ basis
        w.create_clip(f"clip{c}", 120, fps=25.0)
        w.write(f"clip{c}", 0, codes.reshape(120, NUM_WS, W_DIM).astype(np.float32))
    w.finalize()
    cfg = GRUTrainConfig(latents=str(d / "latents.h5"), model=GRUMotionConfig(
        num_ws=NUM_WS, w_dim=W_DIM, latent_dim=8, h_hidden=(16,), t_hidden=(16,), e_hidden=(16,),
        c_channels=(8,), window=8))
    torch.manual_seed(0)
    G = MotionGenerator(cfg.model)
    with LatentStore(d / "latents.h5") as store:
        pca = fit_pca_from_store(store, n_components=4)
    ckpt = motion_checkpoint(cfg, G, G, None, pca, {"fps": 25.0}, generator_sha256="")
    torch.save(ckpt, d / "motion.pt")
    return d


def test_evaluate_latent_metrics_report(motion_files, tmp_path, capsys):
    out = tmp_path / "report.json"
    res = _cli_ok(["evaluate", "--motion", str(motion_files / "motion.pt"), "--latents",
                   str(motion_files / "latents.h5"), "--metrics", "latent_fd,loop", "--num-videos", "4",
                   "--latent-windows", "24", "--loop-frames", "64", "--out", str(out), "--seed", "3"], capsys)
    assert "latent_fd:" in res.out and "loop_score:" in res.out
    rep = json.loads(out.read_text())
    assert rep["format"] == "svgen-eval" and rep["seed"] == 3
    assert set(rep["values"]) == {"latent_fd", "loop_score", "motion_magnitude"}
    assert all(np.isfinite(v) for v in rep["values"].values())
    lfd = rep["metrics"]["latent_fd"]["protocol"]
    assert lfd["window"] == 8 and lfd["window_source"] == "motion.window"
    assert lfd["num_real_windows"] == 24 and lfd["num_fake_windows"] == 24 and lfd["method"] == "svd"
    loop = rep["metrics"]["loop"]["protocol"]
    assert loop["frames"] == 64 and loop["min_lag"] == 8 and loop["num_trajectories"] == 4
    assert rep["inputs"]["motion"]["sha256"] == file_sha256(motion_files / "motion.pt")
    assert {"svgen", "torch", "numpy", "scipy", "python"} <= set(rep["versions"])
    # same seed -> same numbers
    out2 = tmp_path / "again.json"
    _cli_ok(["evaluate", "--motion", str(motion_files / "motion.pt"), "--latents", str(motion_files / "latents.h5"),
             "--metrics", "latent_fd,loop", "--num-videos", "4", "--latent-windows", "24", "--loop-frames", "64",
             "--out", str(out2), "--seed", "3"], capsys)
    assert json.loads(out2.read_text())["values"] == rep["values"]


class ToyI3D(torch.nn.Module):
    """Plumbing stand-in for i3d_torchscript.pt (same call signature): uint8 [B,3,T,H,W] -> [B, 400]."""

    def __init__(self):
        super().__init__()
        self.register_buffer("proj", torch.randn(3 * 2 * 4 * 4, 400, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if x.dtype != torch.uint8:
            raise RuntimeError("toy I3D expects uint8 videos")
        v = x.float() / 127.5 - 1.0 if rescale else x.float()
        return torch.nn.functional.adaptive_avg_pool3d(v, (2, 4, 4)).flatten(1) @ self.proj


def test_evaluate_pixel_metrics_with_plumbing_detector(motion_files, tmp_path, capsys, monkeypatch,
                                                       real_frames_zip32, tiny_motion_pair):
    """PLUMBING TEST of the pixel path: toy I3D (same call signature) in --detector-dir, no Inception
    file -> FID is skipped with a message naming the file; FVD16 and ACD are computed."""
    monkeypatch.delenv("SVGEN_DETECTORS", raising=False)
    dets = tmp_path / "detectors"
    dets.mkdir()
    torch.jit.script(ToyI3D()).save(str(dets / "i3d_torchscript.pt"))
    out = tmp_path / "r.json"
    res = _cli_ok(["evaluate", "--motion", str(tmp_path / "motion.pt"), "--generator", str(tmp_path / "generator.pt"),
                   "--data", str(real_frames_zip32), "--metrics", "fvd16,fid,acd", "--num-videos", "4",
                   "--detector-dir", str(dets), "--real-sampling", "windows", "--max-real", "6", "--sqrt", "svd",
                   "--acd-videos", "2", "--acd-frames", "2", "--cache-dir", str(tmp_path / "cache"),
                   "--out", str(out)], capsys)
    rep = json.loads(out.read_text())
    assert "inception-2015-12-05.pt" in rep["skipped"]["fid"] and "nvlabs-fi-cdn" in rep["skipped"]["fid"]
    assert "inception-2015-12-05.pt" in res.err
    p = rep["metrics"]["fvd16"]["protocol"]
    assert p["num_real_clips_used"] == 6 and p["num_fake_clips"] == 4 and p["real_sampling"] == "windows"
    assert p["detector"]["sha256"] == file_sha256(dets / "i3d_torchscript.pt") and p["sqrt_method"] == "svd"
    assert p["fake_source"]["resolution"] == 32 and p["real_stats_cache"] == "stored"
    assert np.isfinite(rep["values"]["fvd16"]) and np.isfinite(rep["values"]["acd"])
    assert rep["metrics"]["acd"]["num_frames"] == 4
    assert rep["inputs"]["generator"]["sha256"] == file_sha256(tmp_path / "generator.pt")


def test_evaluate_plot_only(tmp_path, capsys):
    run = tmp_path / "runs" / "motion"
    log = JsonlLogger(run / "metrics.jsonl")
    for step in (10, 20, 30):
        log.log(step=step, latent_fd=100.0 / step, loop={"loop_score": 0.1, "motion_magnitude": 0.5})
    res = _cli_ok(["evaluate", "--plot", str(run)], capsys)
    pngs = sorted(p.name for p in (run / "plots").iterdir())
    assert pngs == ["latent_fd.png", "loop.loop_score.png", "loop.motion_magnitude.png", "overview.png"]
    from PIL import Image

    with Image.open(run / "plots" / "latent_fd.png") as im:
        assert im.format == "PNG" and im.size[0] > 100
    assert "charts" in res.err
    code, _, err = run_cli(["evaluate", "--plot", str(tmp_path / "nowhere")], capsys)
    assert code == 1 and "metrics.jsonl" in err and len(err.strip().splitlines()) == 1


def test_evaluate_identity_on_real_video(real_frames_zip, tmp_path, capsys):
    import imageio_ffmpeg

    from svgen.preprocessing.dataset import AlignedDataset

    ds = AlignedDataset(real_frames_zip)
    man, woman = list(ds.clips)
    video = tmp_path / "anim.mp4"
    writer = imageio_ffmpeg.write_frames(str(video), (64, 64), fps=25, quality=9, macro_block_size=1)
    writer.send(None)
    for i in (5, 25, 45):
        writer.send(np.ascontiguousarray(ds.read_frame(man, i)))
    writer.close()
    from PIL import Image

    Image.fromarray(ds.read_frame(man, 0)).save(tmp_path / "me.png")
    Image.fromarray(ds.read_frame(woman, 0)).save(tmp_path / "other.png")
    out = tmp_path / "id.json"
    _cli_ok(["evaluate", "--animation", str(video), "--identity", str(tmp_path / "me.png"), "--out", str(out)],
            capsys)
    rep = json.loads(out.read_text())
    out2 = tmp_path / "id2.json"
    _cli_ok(["evaluate", "--animation", str(video), "--identity", str(tmp_path / "other.png"), "--out", str(out2)],
            capsys)
    rep2 = json.loads(out2.read_text())
    assert rep["values"]["identity_distance"] < 0.5 < rep2["values"]["identity_distance"]
    assert rep["metrics"]["identity"]["frames_with_face"] == 3 and rep["inputs"]["animation"]["frames"] == 3


def test_evaluate_usage_and_input_errors(motion_files, tmp_path, capsys):
    motion = str(motion_files / "motion.pt")
    code, _, err = run_cli(["evaluate", "--motion", motion, "--metrics", "fvd99", "--out", "x.json"], capsys)
    assert code == 2 and "fvd99" in err
    code, _, err = run_cli(["evaluate", "--motion", motion, "--metrics", "fvd16", "--out", "x.json"], capsys)
    assert code == 2 and "--data" in err
    code, _, err = run_cli(["evaluate", "--motion", motion, "--metrics", "loop"], capsys)
    assert code == 2 and "--out" in err
    code, _, err = run_cli(["evaluate", "--motion", str(tmp_path / "missing.pt"), "--metrics", "loop",
                            "--out", str(tmp_path / "r.json")], capsys)
    assert code == 1 and err.strip() == f"svgen: error: {tmp_path / 'missing.pt'}: motion checkpoint does not exist"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(["evaluate", "--motion", motion, "--metrics", "loop", "--out",
                            str(blocker / "r.json")], capsys)
    assert code == 1 and err.startswith("svgen: error: ") and len(err.strip().splitlines()) == 1
    notmotion = tmp_path / "bad.pt"
    notmotion.write_bytes(b"garbage")
    code, _, err = run_cli(["evaluate", "--motion", str(notmotion), "--metrics", "loop",
                            "--out", str(tmp_path / "r.json")], capsys)
    assert code == 1 and str(notmotion) in err and not (tmp_path / "r.json").exists()


def test_evaluate_library_gives_the_cli_report(motion_files, tmp_path, capsys):
    """``svgen.metrics.evaluate(spec)`` is what the CLI runs: the same spec gives the same numbers,
    the report is written to spec.out, and usage errors name the option."""
    from svgen.metrics.evaluate import EvalSpec, EvaluateUsageError, evaluate

    out = tmp_path / "cli.json"
    _cli_ok(["evaluate", "--motion", str(motion_files / "motion.pt"), "--latents", str(motion_files / "latents.h5"),
             "--metrics", "latent_fd,loop", "--num-videos", "4", "--latent-windows", "24", "--loop-frames", "64",
             "--out", str(out), "--seed", "5", "--device", "cpu"], capsys)
    spec = EvalSpec(motion=motion_files / "motion.pt", latents=str(motion_files / "latents.h5"),
                    metrics="latent_fd,loop", num_videos=4, latent_windows=24, loop_frames=64,
                    out=tmp_path / "lib.json", seed=5, device="cpu")
    said = []
    rep = evaluate(spec, say=said.append)
    cli_rep = json.loads(out.read_text())
    assert rep["values"] == cli_rep["values"] and len(rep["values"]) == 3
    assert json.loads((tmp_path / "lib.json").read_text())["values"] == rep["values"]
    assert {**rep["options"], "out": None} == {**cli_rep["options"], "out": None}   # one field per option
    assert rep["metrics"]["loop"]["protocol"]["frames"] == 64 and rep["metrics"]["latent_fd"]["protocol"]["window"] == 8
    with pytest.raises(EvaluateUsageError) as exc:
        evaluate(EvalSpec(motion=motion_files / "motion.pt", metrics="latent_fd,fvd99", out=tmp_path / "x.json"))
    assert exc.value.param == "--metrics" and "fvd99" in exc.value.message
    with pytest.raises(EvaluateUsageError, match="--out"):
        evaluate(EvalSpec(motion=motion_files / "motion.pt", latents=motion_files / "latents.h5", metrics="latent_fd"))
    assert not (tmp_path / "x.json").exists()


def test_evaluate_num_runs_gives_mean_and_std_over_seeds(motion_files, tmp_path, capsys):
    """--num-runs K: every metric K times with seeds SEED .. SEED+K-1; values = their mean, values_std
    their sample std, runs = each run's values (run k equals a single run with seed SEED+k)."""
    args = ["evaluate", "--motion", str(motion_files / "motion.pt"), "--latents", str(motion_files / "latents.h5"),
            "--metrics", "latent_fd,loop", "--num-videos", "4", "--latent-windows", "24", "--loop-frames", "64",
            "--device", "cpu"]
    res = _cli_ok([*args, "--num-runs", "3", "--seed", "3", "--out", str(tmp_path / "k.json")], capsys)
    rep = json.loads((tmp_path / "k.json").read_text())
    assert [r["seed"] for r in rep["runs"]] == [3, 4, 5] and "(3 runs)" in res.out
    _cli_ok([*args, "--seed", "4", "--out", str(tmp_path / "one.json")], capsys)
    assert rep["runs"][1]["values"] == json.loads((tmp_path / "one.json").read_text())["values"]
    for name in ("latent_fd", "loop_score", "motion_magnitude"):
        vals = np.array([r["values"][name] for r in rep["runs"]])
        assert rep["values"][name] == pytest.approx(vals.mean(), rel=1e-12)
        assert rep["values_std"][name] == pytest.approx(vals.std(ddof=1), rel=1e-12) and rep["values_std"][name] > 0
    code, _, err = run_cli([*args, "--num-runs", "0", "--out", str(tmp_path / "z.json")], capsys)
    assert code == 2 and "--num-runs" in err
