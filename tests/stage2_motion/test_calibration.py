"""Motion spread calibration (svgen/stage2_motion/calibration.py): the gains restore each leading
component's temporal spread, the GRU fits them at export and applies them to every sample."""
from __future__ import annotations

import json

import numpy as np
import torch

from svgen.inversion.latent_store import LatentStore
from svgen.stage2_motion import load_motion
from svgen.stage2_motion.calibration import calibrate_from_store, temporal_spread
from svgen.stage2_motion.gru.model import GRUMotionConfig
from svgen.stage2_motion.gru.train import GRUTrainConfig, GRUTrainer
from svgen.stage2_motion.offset import fit_pca_from_store

from clitools import ok_cli
from test_stage2_gru_train import SMALL, _tiny_cfg, oscillator_store


def _store_windows(store: LatentStore, window: int) -> list[np.ndarray]:
    return [w for _, _, w in store.iter_windows(window, stride=window // 2)]


def test_gains_restore_each_components_spread(tmp_path):
    """A 'model' that replays the training windows with component 0's motion shrunk to 0.4x and
    component 1's grown to 1.5x (about the first frame): the gains are 1/0.4 and 1/1.5, and the
    calibrated replay has the store's spread in every leading component."""
    path = oscillator_store(tmp_path / "l.h5", clips=3, frames=200, noise=0.01)
    with LatentStore(path) as store:
        basis = fit_pca_from_store(store, n_components=8)
        real = np.stack(_store_windows(store, 50))                                 # [n, 50, num_ws, w_dim]
        V = basis.components[:2]
        factors = np.array([0.4, 1.5])

        def replay(num: int, frames: int, seed: int) -> torch.Tensor:
            idx = np.random.default_rng(seed).permutation(len(real))[:num]
            w = real[idx, :frames].reshape(num, frames, -1).astype(np.float64)
            x = w - w[:, :1]
            w = w + ((x @ V.T) * (factors - 1.0)) @ V
            return torch.from_numpy(w.reshape(real[idx, :frames].shape))

        cal = calibrate_from_store(replay, store, basis, window=50, num=len(real), seed=0)
        assert cal.window == 50 and cal.k == 8
        np.testing.assert_allclose(cal.gain[:2], 1.0 / factors, rtol=0.02)
        np.testing.assert_allclose(cal.gain[2:], 1.0, rtol=0.02)
        calibrated = cal.apply(replay(len(real), 50, 1), torch.from_numpy(real[:, 0].astype(np.float64)))
        ratio = temporal_spread(calibrated.numpy(), basis, 8) / temporal_spread(real, basis, 8)
        np.testing.assert_allclose(ratio, 1.0, rtol=0.02)
        # the gains are capped: a component that never moves is not blown up without bound
        frozen = calibrate_from_store(lambda n, t, s: replay(n, t, s)[:, :1].expand(-1, t, -1, -1),
                                      store, basis, window=50, num=8, max_gain=3.0)
        assert np.allclose(frozen.gain, 3.0)


def test_gru_export_fits_it_and_samples_carry_the_store_spread(tmp_path, capsys):
    store_path = oscillator_store(tmp_path / "l.h5", clips=2, frames=120, noise=0.01, wmin=0.25, wmax=0.35)
    cfg = GRUTrainConfig(latents=str(store_path), out=str(tmp_path / "r"), model=GRUMotionConfig(window=10, **SMALL),
                         epochs=1000, steps=150, batch=32, stride=2, lr_G=2e-3, lr_C=1e-3, snapshot_every=1000,
                         eval_windows=32, eval_long_frames=60, device="cpu", seed=0, calibration_window=60,
                         calibration_max_gain=5.0)
    path = GRUTrainer(cfg).train()
    assert "calibration" in torch.load(path, weights_only=True)
    m = load_motion(path)
    assert not m.calibrated and m.calibration.window == 60        # off unless asked for
    m.calibrated = True
    with LatentStore(store_path) as store:
        real = _store_windows(store, 60)
    k = 4
    target = temporal_spread(real, m.pca, k)
    calibrated = m.sample(32, 60, seed=5).numpy()
    m.calibrated = False
    raw = m.sample(32, 60, seed=5).numpy()
    before = temporal_spread(raw, m.pca, k) / target
    after = temporal_spread(calibrated, m.pca, k) / target
    print("leading components' spread / the store's: raw", np.round(before, 2), "calibrated", np.round(after, 2))
    unclipped = (m.calibration.gain[:k] < 4.99) & (m.calibration.gain[:k] > 1 / 4.99)
    assert unclipped.all(), m.calibration.gain[:k]
    # fitted on seed 2468, checked on seed 5: within 20 % of the store's spread in each component
    assert np.all(np.abs(np.log(after)) < np.log(1.2)), after
    assert np.max(np.abs(np.log(before))) > np.log(1.2), before      # it had something to correct
    # frame 0 is the model's own; streaming in chunks gives the same frames
    np.testing.assert_allclose(calibrated[:, 0], raw[:, 0], atol=1e-5)
    m.calibrated = True
    streamed = torch.cat(list(m.sample_chunks(32, 60, seed=5, chunk=7)), dim=1).numpy()
    np.testing.assert_allclose(streamed, calibrated, atol=1e-5)
    info: dict = {}
    m.animate_latents(np.zeros((m.num_ws, m.w_dim), np.float32), 20, 25.0, seed=0, info=info)
    assert info["calibration"]["applied"] and len(info["calibration"]["gain_leading"]) == 8
    # the CLI: `svgen sample --calibration on|off` writes those latents and records the choice
    for flag, want in (("on", calibrated), ("off", raw)):
        ok_cli(capsys, "sample", "--motion", str(path), "--num", "32", "--frames", "60", "--seed", "5",
               "--calibration", flag, "--out", str(tmp_path / flag), "--device", "cpu")
        np.testing.assert_allclose(np.load(tmp_path / flag / "latents.npy"), want, atol=1e-5)
        assert json.loads((tmp_path / flag / "sample.json").read_text())["calibration"]["applied"] == (flag == "on")


def test_checkpoints_without_calibration_render_as_trained(tmp_path):
    store_path = oscillator_store(tmp_path / "l.h5", clips=2, frames=40)
    path = GRUTrainer(_tiny_cfg(store_path, tmp_path / "r", 3, calibrate=False)).train()
    m = load_motion(path)
    assert m.calibration is None and not m.calibrated
    info: dict = {}
    m.animate_latents(np.zeros((m.num_ws, m.w_dim), np.float32), 10, 25.0, seed=0, info=info)
    assert info["calibration"] == {"applied": False, "reason": "the checkpoint has none"}
    torch.testing.assert_close(m.sample(2, 30, seed=1), m.G.sample(2, 30, seed=1))
