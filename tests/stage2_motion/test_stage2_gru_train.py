"""Training the GRU motion model: quality signal, resume, motion.pt, CLI, errors, and (slow) the
gradient angle penalty against looping.

Quality tests train on latent trajectories with a known structure (oscillators in a low-dimensional
subspace of W+, as the issue allows), because meaningful real latents need a trained encoder;
``test_stage2_gru_real.py`` trains on real inverted latents.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from svgen.inversion.latent_store import LatentStore, LatentStoreWriter
from svgen.stage2_motion import load_motion
from svgen.stage2_motion.gru.model import GRUMotionConfig
from svgen.stage2_motion.gru.train import GRUTrainConfig, GRUTrainer, train_gru
from svgen.utils.io import file_sha256
from svgen.utils.logging import read_jsonl

from clitools import ok_cli, run_cli



NUM_WS, W_DIM = 4, 16
SMALL = dict(h_hidden=(32,), t_hidden=(32, 64), e_hidden=(64, 64, 32, 32, 32), c_channels=(32, 64))


def oscillator_store(path, clips=4, frames=400, m=6, seed=0, noise=0.05, generator_sha256="",
                     num_ws=NUM_WS, w_dim=W_DIM, wmin=0.05, wmax=0.2, scale=1.0):
    """Latent trajectories with known structure: m oscillators (fixed frequencies, slowly drifting
    phases, random amplitudes per clip) mapped linearly into W+ around a mean, plus noise."""
    rng = np.random.default_rng(seed)
    d = num_ws * w_dim
    mix = rng.standard_normal((2 * m, d)) / np.sqrt(2 * m)
    mean = rng.standard_normal(d)
    omega = rng.uniform(wmin, wmax, m)
    w = LatentStoreWriter(path, space="w+", num_ws=num_ws, w_dim=w_dim, generator_sha256=generator_sha256)
    for c in range(clips):
        t = np.arange(frames)[:, None]
        phase = np.cumsum(rng.normal(0, 0.05, (frames, m)), 0) + rng.uniform(0, 2 * np.pi, m)
        amp = rng.uniform(0.5, 1.5, m)
        z = np.concatenate([amp * np.sin(omega * t + phase), amp * np.cos(omega * t + phase)], 1)
        x = scale * (mean + z @ mix + noise * rng.standard_normal((frames, d)))
        w.create_clip(f"clip{c}", frames, fps=25.0)
        w.write(f"clip{c}", 0, x.reshape(frames, num_ws, w_dim).astype(np.float32))
    return w.finalize()


@pytest.fixture(scope="module")
def osc_store(tmp_path_factory):
    return oscillator_store(tmp_path_factory.mktemp("osc") / "latents.h5", noise=0.01, wmin=0.25, wmax=0.35)


def test_training_lowers_latent_fd_on_structured_latents(osc_store, tmp_path):
    cfg = GRUTrainConfig(latents=str(osc_store), out=str(tmp_path / "run"),
                         model=GRUMotionConfig(window=10, **SMALL), epochs=1000, steps=250, batch=32, stride=2,
                         lr_G=2e-3, lr_C=1e-3, snapshot_every=1000, eval_windows=96, eval_long_frames=100,
                         device="cpu", seed=0)
    path = train_gru(cfg)
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    first, last = metrics[0], metrics[-1]
    print(f"\nlatent FD (EMA generator vs real windows): {first['latent_fd']:.1f} at init, "
          f"{last['latent_fd']:.1f} after {last['step']} steps")
    assert first["step"] == 0 and last["step"] == 250
    assert last["latent_fd"] < 0.75 * first["latent_fd"], metrics
    logs = read_jsonl(tmp_path / "run" / "log.jsonl")
    assert logs and {"loss_C", "loss_G", "gp", "gap", "phi", "wdist"} <= set(logs[-1])
    assert path == tmp_path / "run" / "motion.pt"


def _tiny_cfg(store, out, steps, **kw):
    return GRUTrainConfig(latents=str(store), out=str(out), model=GRUMotionConfig(window=8, **SMALL),
                          epochs=1000, steps=steps, batch=4, stride=8, snapshot_every=kw.pop("snapshot_every", 1000),
                          eval_windows=16, eval_long_frames=40, eval_long_num=2, device="cpu", seed=3, **kw)


def _assert_same_networks(a: GRUTrainer, b: GRUTrainer) -> None:
    for name in ("G", "G_ema", "C"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-6, msg=f"{name}.{k}")


def test_resume_equals_uninterrupted(tmp_path):
    store = oscillator_store(tmp_path / "l.h5", clips=2, frames=40)
    GRUTrainer(_tiny_cfg(store, tmp_path / "a", 7)).train()          # 7 steps: stops inside an epoch
    resumed = GRUTrainer(_tiny_cfg(store, tmp_path / "a", 12), resume=True)
    assert resumed.step == 7 and resumed.batch_in_epoch > 0
    resumed.train()
    straight = GRUTrainer(_tiny_cfg(store, tmp_path / "b", 12))
    straight.train()
    _assert_same_networks(resumed, straight)


def test_a_new_run_refuses_a_folder_that_holds_one(tmp_path):
    """The run object's overwrite guard (svgen.training.Run): no silent restart over a trained run."""
    from svgen.utils.errors import SvgenError

    store = oscillator_store(tmp_path / "l.h5", clips=2, frames=40)
    GRUTrainer(_tiny_cfg(store, tmp_path / "a", 2)).train()
    with pytest.raises(SvgenError, match="already holds a training run"):
        GRUTrainer(_tiny_cfg(store, tmp_path / "a", 4))


def test_runs_saved_before_the_penalty_options_resume_as_they_trained(tmp_path):
    """A checkpoint whose config has no ``penalty_units`` / ``n_critic`` (written before issue #13)
    resumes with the normalised penalty and one critic step, not with the new defaults."""
    store = oscillator_store(tmp_path / "l.h5", clips=2, frames=40)
    GRUTrainer(_tiny_cfg(store, tmp_path / "a", 2, penalty_units="normalised", n_critic=1)).train()
    latest = tmp_path / "a" / "checkpoints" / "latest.pt"
    state = torch.load(latest, weights_only=True)
    del state["config"]["penalty_units"], state["config"]["n_critic"]
    torch.save(state, latest)
    resumed = GRUTrainer(_tiny_cfg(store, tmp_path / "a", 4), resume=True)
    assert (resumed.cfg.penalty_units, resumed.cfg.n_critic) == ("normalised", 1)
    assert GRUTrainer(_tiny_cfg(store, tmp_path / "b", 4)).cfg.penalty_units == "raw"


def test_runs_saved_with_epoch_cadences_resume_as_they_trained(tmp_path):
    """--snapshot-every counts steps in every trainer; GRU runs saved when it counted epochs (a config
    without ``cadence_unit``) are converted on load: snapshots at the same epoch ends as before, numbered
    files at the old keep epochs, and the same weights as an uninterrupted run."""
    from svgen.stage2_motion.gru.train import cadence_in_steps

    store = oscillator_store(tmp_path / "l.h5", clips=2, frames=40)      # 2 batches every epoch
    first = GRUTrainer(_tiny_cfg(store, tmp_path / "a", 4))
    assert first.sampler.batches_per_epoch(0) == first.sampler.batches_per_epoch(7) == 2
    first.train()
    latest = tmp_path / "a" / "checkpoints" / "latest.pt"
    state = torch.load(latest, weights_only=True)
    assert state["config"]["cadence_unit"] == "steps" and (state["epoch"], state["batch_in_epoch"]) == (2, 0)
    del state["config"]["cadence_unit"]
    state["config"].update(snapshot_every=1, keep_every=2)             # old meaning: epochs
    torch.save(state, latest)
    resumed = GRUTrainer(_tiny_cfg(store, tmp_path / "a", 10, snapshot_every=None), resume=True)
    assert (resumed.cfg.snapshot_every, resumed.cfg.keep_every, resumed.cfg.cadence_unit) == (2, 4, "steps")
    resumed.train()
    snaps = [m["step"] for m in read_jsonl(tmp_path / "a" / "metrics.jsonl")]
    assert snaps == [0, 4, 6, 8, 10]                  # init, end of the first call, epochs 3 and 4, the end
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").glob("motion-*.pt")) == ["motion-0000008.pt"]
    straight = GRUTrainer(_tiny_cfg(store, tmp_path / "b", 10))
    straight.train()
    _assert_same_networks(resumed, straight)
    # a cadence given on --resume is in steps; unset cadences take the step defaults
    given = GRUTrainer(_tiny_cfg(store, tmp_path / "a", 12, snapshot_every=3), resume=True)
    assert (given.cfg.snapshot_every, given.cfg.keep_every) == (3, 4)
    fresh = cadence_in_steps(GRUTrainConfig(), batches_per_epoch=7)
    assert (fresh.snapshot_every, fresh.keep_every, fresh.preview_every) == (200, 1000, 0)


def test_motion_checkpoint_loads_and_animates(tmp_path):
    store = oscillator_store(tmp_path / "l.h5", clips=2, frames=40, generator_sha256="abc")
    path = GRUTrainer(_tiny_cfg(store, tmp_path / "r", 3)).train()
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["format"] == "svgen-motion" and ckpt["model"] == "gru"
    assert {"G", "ema", "critic", "pca", "latents_ref", "config", "generator_sha256"} <= set(ckpt)
    assert ckpt["pca"]["components"].shape[1] == NUM_WS * W_DIM
    m = load_motion(path)
    assert (m.model_name, m.num_ws, m.w_dim, m.generator_sha256) == ("gru", NUM_WS, W_DIM, "abc")
    traj = m.sample(2, 300, seed=1)
    assert traj.shape == (2, 300, NUM_WS, W_DIM) and torch.isfinite(traj).all()
    w_new = np.random.default_rng(0).standard_normal((NUM_WS, W_DIM)).astype(np.float32)
    info = {}
    out = m.animate_latents(w_new, 50, 25.0, seed=4, info=info)
    assert out.shape == (50, NUM_WS, W_DIM) and out.dtype == np.float32
    assert info["offset"]["mode"] == "pca" and info["native_frames"] == 50
    # PCA offset: the identity minus its projection is added to the sampled motion of the same seed
    base = m.sample(1, 50, seed=4)[0].numpy()
    from svgen.stage2_motion.offset import project
    np.testing.assert_allclose(out - base, np.broadcast_to(w_new - project(w_new, m.pca), base.shape),
                               atol=1e-4)
    # another fps: same duration, resampled
    info = {}
    assert m.animate_latents(w_new, 99, 50.0, seed=4, info=info).shape == (99, NUM_WS, W_DIM)
    assert info["native_frames"] == 50
    assert m.animate_latents(w_new, 99, 25.0, seed=4, info=info, slowmo=2.0).shape == (99, NUM_WS, W_DIM)
    assert info["native_frames"] == 50


def test_cli_train_motion_and_sample(tmp_path, capsys, random_generator_path):
    from svgen.stage1_image_gan.checkpoints import load_generator

    G = load_generator(random_generator_path)
    sha = file_sha256(random_generator_path)
    store = oscillator_store(tmp_path / "l.h5", clips=2, frames=40, generator_sha256=sha,
                             num_ws=G.num_ws, w_dim=G.w_dim)
    out, _ = ok_cli(capsys, "train-motion", "--latents", store, "--model", "gru", "--out", tmp_path / "run",
                 "--steps", 2, "--batch", 4, "--window", 8, "--generator", random_generator_path,
                 "--lr", "3e-4", "--device", "cpu")
    motion = tmp_path / "run" / "motion.pt"
    assert str(motion) in out and motion.is_file()
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["model"]["window"] == 8 and cfg["steps"] == 2 and cfg["lambda_gap"] == 100.0
    assert (cfg["lambda_gp"], cfg["penalty_units"], cfg["n_critic"]) == (50.0, "raw", 5)
    assert (cfg["lr_G"], cfg["lr_C"]) == (3e-4, 2e-4)                 # --lr is the generator's alone
    m = load_motion(motion)
    assert m.generator_sha256 == sha and m.generator_path == str(random_generator_path.resolve())

    ok_cli(capsys, "sample", "--motion", motion, "--num", 2, "--frames", 12, "--out", tmp_path / "s",
           "--generator", random_generator_path, "--seed", 5)
    lat = np.load(tmp_path / "s" / "latents.npy")
    assert lat.shape == (2, 12, G.num_ws, G.w_dim)
    np.testing.assert_allclose(lat, m.sample(2, 12, seed=5).numpy(), atol=1e-6)
    from svgen.preprocessing.video_io import probe
    info = probe(tmp_path / "s" / "sample_001.mp4")
    assert info.num_frames == 12 and info.width == G.img_resolution

    # resume continues and re-exports
    ok_cli(capsys, "train-motion", "--latents", store, "--out", tmp_path / "run", "--steps", 3, "--batch", 4,
           "--window", 8, "--resume", "--device", "cpu")
    assert torch.load(motion, weights_only=True)["meta"]["step"] == 3


def test_cli_errors_are_one_line(tmp_path, capsys, random_generator_path):
    store = oscillator_store(tmp_path / "l.h5", clips=1, frames=30, generator_sha256="0" * 64)

    def fails(*args, match):
        code, _, err = run_cli(capsys, *args)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and lines[0].startswith("svgen: error:"), err
        assert match in lines[0], lines[0]

    base = ("train-motion", "--latents", store, "--out", tmp_path / "r", "--steps", 1, "--batch", 2,
            "--window", 8, "--device", "cpu")
    fails(*base, "--generator", random_generator_path, match="another generator")
    fails("train-motion", "--latents", tmp_path / "nope.h5", "--out", tmp_path / "r", match="does not exist")
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    fails("train-motion", "--latents", tmp_path / "bad.h5", "--out", tmp_path / "r", match="not a readable")
    fails(*base[:-4], "--window", 64, "--device", "cpu", match="no clip has the 64 frames")
    fails(*base, "--resume", match="no checkpoint")
    fails(*base, "--epochs", 0, match="--epochs must be a positive")
    fails(*base, "--n-critic", 0, match="--n-critic must be a positive")
    code, _, err = run_cli(capsys, *base, "--epochs", 3)           # one length option: steps or epochs
    assert code == 2 and "give either --epochs or --steps, not both" in err, err
    (tmp_path / "file").write_text("x")
    fails("train-motion", "--latents", store, "--out", tmp_path / "file" / "sub", "--steps", 1,
          match="cannot create output folder")
    assert not (tmp_path / "r" / "motion.pt").exists()
    fails("sample", "--motion", tmp_path / "bad.h5", "--out", tmp_path / "s", match="not a readable")
    fails("sample", "--motion", store, "--out", tmp_path / "s", "--frames", 0, match="--frames must be")


def periodic_store(path, period=20, reps=4, noise=0.01, seed=0):
    """A short repetitive training set (one 'sentence' said ``reps`` times): a closed curve in a
    2-D subspace of W+, period ``period`` frames, plus a little noise."""
    rng = np.random.default_rng(seed)
    d = NUM_WS * W_DIM
    phase = 2 * np.pi * np.arange(period * reps) / period
    z = np.stack([np.sin(phase), np.cos(phase)], 1)
    x = rng.standard_normal(d) + z @ (rng.standard_normal((2, d)) / np.sqrt(2)) + noise * rng.standard_normal((len(z), d))
    w = LatentStoreWriter(path, space="w+", num_ws=NUM_WS, w_dim=W_DIM, generator_sha256="")
    w.create_clip("sentence", len(z), fps=25.0)
    w.write("sentence", 0, x.reshape(-1, NUM_WS, W_DIM).astype(np.float32))
    return w.finalize()


@pytest.mark.slow
def test_gradient_angle_penalty_reduces_looping(tmp_path):
    """The paper's claim in miniature: two models trained on a short repetitive training set (one
    'sentence' said 4 times), with and without the gradient angle penalty; long samples (15x the
    training window) of the model trained without GAP repeat themselves far more than with GAP."""
    from svgen.metrics.looping import loop_score, trajectory_stats

    store = periodic_store(tmp_path / "sentence.h5")
    window, steps = 10, 800
    scores, fds = {}, {}
    for lambda_gap in (100.0, 0.0):
        out = tmp_path / f"gap{lambda_gap:g}"
        cfg = GRUTrainConfig(latents=str(store), out=str(out), model=GRUMotionConfig(window=window, **SMALL),
                             epochs=10_000, steps=steps * GRUTrainConfig.n_critic, batch=32, stride=1,
                             lr_G=2e-3, lr_C=1e-3, lambda_gap=lambda_gap, snapshot_every=10_000, eval_windows=64, eval_long_frames=50,
                             eval_long_num=1, device="cpu", seed=0)
        tr = GRUTrainer(cfg)
        tr.train()
        metrics = read_jsonl(out / "metrics.jsonl")
        fds[lambda_gap] = (metrics[0]["latent_fd"], metrics[-1]["latent_fd"])
        long = tr.G_ema.sample(8, 15 * window, seed=1).numpy()
        scores[lambda_gap] = trajectory_stats(long, min_lag=window)
    with LatentStore(store) as st:
        real = loop_score(st.read("sentence"), window)
    print(f"\nlatent FD init -> {steps} generator steps (rank-2 data: large values): with GAP {fds[100.0][0]:.0f} -> "
          f"{fds[100.0][1]:.0f}, without GAP {fds[0.0][0]:.0f} -> {fds[0.0][1]:.0f}")
    print(f"loop score (min lag {window}, 8 x {15 * window} frames): real {real:.3f}, "
          f"with GAP {scores[100.0]['loop_score']:.3f} (motion {scores[100.0]['motion_magnitude']:.2f}), "
          f"without GAP {scores[0.0]['loop_score']:.3f} (motion {scores[0.0]['motion_magnitude']:.2f})")
    assert real > 0.9
    assert scores[0.0]["motion_magnitude"] > 0.1 and scores[100.0]["motion_magnitude"] > 0.1   # neither frozen
    assert scores[100.0]["loop_score"] < scores[0.0]["loop_score"] - 0.15, scores


@pytest.mark.parametrize("units", ["raw", "normalised"])
def test_fused_critic_step_equals_the_literal_computation(tmp_path, units):
    """The default training step (G's last affine map composed with C's first layer, gradient
    penalty in the H1 space) gives the same losses and parameters as the literal W+ computation,
    with the penalty in either units."""
    store = oscillator_store(tmp_path / "l.h5", clips=2, frames=100, scale=0.1)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        runs = {}
        for fused in (False, True):
            cfg = GRUTrainConfig(latents=str(store), out=str(tmp_path / f"run{fused}"),
                                 model=GRUMotionConfig(window=10, **SMALL), steps=3, batch=8, device="cpu",
                                 seed=0, fused=fused, penalty_units=units)
            tr = GRUTrainer(cfg)
            stats = [tr.train_step(torch.from_numpy(real).double()) for real in tr.sampler.epoch(0)]
            runs[fused] = (stats, dict(tr.G.named_parameters()), dict(tr.C.named_parameters()))
    finally:
        torch.set_default_dtype(old)
    (s0, g0, c0), (s1, g1, c1) = runs[False], runs[True]
    assert len(s0) == len(s1) == 2
    for a, b in zip(s0, s1):
        for key in ("loss_C", "loss_G", "gp", "gap", "wdist"):
            assert a[key] == pytest.approx(b[key], rel=1e-10, abs=1e-12), key
    for params0, params1 in ((g0, g1), (c0, c1)):
        for name, p in params0.items():
            torch.testing.assert_close(params1[name], p, rtol=1e-9, atol=1e-11)


def test_normalised_penalty_does_not_depend_on_the_scale_of_the_latents(tmp_path):
    """With ``penalty_units="normalised"`` G and C work in normalised latents and the gradient penalty
    is measured there, so latents scaled by 20 (or by 0.05, like the per-component spread of one
    real video) train identically. (The default raw-unit penalty is the paper's, and is not.)"""
    stats = {}
    for k in (1.0, 20.0, 0.05):
        store = oscillator_store(tmp_path / f"l{k}.h5", clips=2, frames=100, scale=k)
        cfg = GRUTrainConfig(latents=str(store), out=str(tmp_path / f"run{k}"),
                             model=GRUMotionConfig(window=10, **SMALL), steps=2, batch=8, device="cpu", seed=0,
                             penalty_units="normalised")
        tr = GRUTrainer(cfg)
        stats[k] = [tr.train_step(torch.from_numpy(real)) for real in tr.sampler.epoch(0)]
    for k in (20.0, 0.05):
        for a, b in zip(stats[1.0], stats[k]):
            for key in ("loss_C", "loss_G", "gp", "wdist"):
                assert b[key] == pytest.approx(a[key], rel=2e-3, abs=1e-4), (k, key)
