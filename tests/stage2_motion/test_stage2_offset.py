"""The offset trick: PCA projection, Delta, layers, strength, naive mode."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA

from svgen.stage2_motion.offset import (coarse_layers, hold_layers,
    PCABasis, apply_offset, fit_pca, fit_pca_from_store, offset_delta, parse_layers, project,
)



NUM_WS, W_DIM = 4, 16


def _actor(seed: int = 0, frames: int = 300, k: int = 5):
    """W+ codes of one 'actor': a mean plus motion in a k-dim subspace, plus a little noise."""
    rng = np.random.default_rng(seed)
    d = NUM_WS * W_DIM
    basis = np.linalg.qr(rng.standard_normal((d, k)))[0].T           # [k, D] orthonormal
    coords = rng.standard_normal((frames, k)) * np.linspace(3, 1, k)
    x = rng.standard_normal(d) * 2 + coords @ basis + 0.01 * rng.standard_normal((frames, d))
    return x.reshape(frames, NUM_WS, W_DIM), basis


def test_streamed_pca_equals_sklearn_pca():
    codes, _ = _actor()
    chunks = [codes[a:a + 37] for a in range(0, len(codes), 37)]
    basis = fit_pca(chunks, NUM_WS, W_DIM, n_components=8, batch=64)   # several partial fits
    ref = PCA(n_components=8).fit(codes.reshape(len(codes), -1))
    np.testing.assert_allclose(basis.mean, ref.mean_, atol=1e-8)
    # same leading (well separated) subspace: projections agree
    x = np.random.default_rng(1).standard_normal((5, NUM_WS * W_DIM))
    v_ours, v_ref = basis.components[:5], ref.components_[:5]
    p_ours = (x - basis.mean) @ v_ours.T @ v_ours
    p_ref = (x - ref.mean_) @ v_ref.T @ v_ref
    np.testing.assert_allclose(p_ours, p_ref, atol=1e-3)
    np.testing.assert_allclose(basis.explained_variance[:5], ref.explained_variance_[:5], rtol=1e-2)
    assert basis.k == 8 and basis.num_frames == len(codes)
    # tiny data: components capped at frames - 1
    assert fit_pca([codes[:4]], NUM_WS, W_DIM, n_components=32).k == 3


def test_projection_lies_in_the_pca_subspace_and_is_idempotent():
    codes, _ = _actor()
    basis = fit_pca([codes], NUM_WS, W_DIM, n_components=32)
    w_new = np.random.default_rng(2).standard_normal((NUM_WS, W_DIM)) * 3
    w_proj = project(w_new, basis)
    x = w_proj.reshape(-1) - basis.mean
    # in the affine subspace: no component outside span(components)
    residual = x - basis.components.T @ (basis.components @ x)
    assert np.linalg.norm(residual) < 1e-8 * max(1.0, np.linalg.norm(x))
    np.testing.assert_allclose(project(w_proj, basis), w_proj, atol=1e-9)
    # Delta is orthogonal to the subspace
    delta = offset_delta(w_new, basis, "pca").reshape(-1)
    assert np.abs(basis.components @ delta).max() < 1e-8
    np.testing.assert_allclose(w_proj + delta.reshape(NUM_WS, W_DIM), w_new, atol=1e-12)


def test_trajectory_through_w_prime_passes_through_w_new():
    codes, _ = _actor()
    basis = fit_pca([codes], NUM_WS, W_DIM, n_components=32)
    w_new = np.random.default_rng(3).standard_normal((NUM_WS, W_DIM)) * 3
    w_prime = project(w_new, basis)
    traj = codes[:50].copy()
    traj[17] = w_prime                                   # the trajectory passes through w'_new
    out, info = apply_offset(traj, w_new, basis, mode="pca")
    np.testing.assert_allclose(out[17], w_new, atol=1e-4)
    # every frame moved by the same Delta: the motion is unchanged
    np.testing.assert_allclose(np.diff(out, axis=0), np.diff(traj, axis=0), atol=1e-4)
    assert info["mode"] == "pca" and info["components"] == basis.k
    assert info["delta_norm"] == pytest.approx(np.linalg.norm(w_new - w_prime), rel=1e-5)


def test_naive_mode_moves_the_first_frame_onto_the_identity_and_differs_from_pca():
    codes, _ = _actor()
    basis = fit_pca([codes], NUM_WS, W_DIM, n_components=32)
    w_new = np.random.default_rng(4).standard_normal((NUM_WS, W_DIM)) * 3
    traj = codes[100:140]
    naive, _ = apply_offset(traj, w_new, basis, mode="naive")
    pca, _ = apply_offset(traj, w_new, basis, mode="pca")
    np.testing.assert_allclose(naive[0], w_new, atol=1e-5)
    # PCA mode keeps the identity's own state (expression/pose coordinates): its first frame differs
    assert np.linalg.norm(pca[0] - w_new) > 0.1
    # they differ by a constant: naive - pca = w'_new - w_0
    np.testing.assert_allclose(naive - pca, np.broadcast_to(project(w_new, basis) - traj[0], traj.shape),
                               atol=1e-4)
    none, info = apply_offset(traj, w_new, basis, mode="none")
    np.testing.assert_allclose(none, traj, atol=1e-5)
    assert info["delta_norm"] == 0.0


def test_layers_strength_and_components():
    codes, _ = _actor()
    basis = fit_pca([codes], NUM_WS, W_DIM, n_components=32)
    w_new = np.random.default_rng(5).standard_normal((NUM_WS, W_DIM)) * 3
    traj = codes[:20]
    full, _ = apply_offset(traj, w_new, basis)
    half, _ = apply_offset(traj, w_new, basis, strength=0.5)
    np.testing.assert_allclose(half - traj, 0.5 * (full - traj), atol=1e-4)
    layers = parse_layers("0-1,3", NUM_WS)
    assert layers == [0, 1, 3]
    part, info = apply_offset(traj, w_new, basis, layers=layers)
    np.testing.assert_allclose(part[:, 2], traj[:, 2], atol=1e-5)             # layer 2 not shifted
    np.testing.assert_allclose(part[:, [0, 1, 3]], full[:, [0, 1, 3]], atol=1e-5)
    assert info["layers"] == [0, 1, 3]
    # fewer components: a smaller subspace leaves a larger Delta
    d2 = np.linalg.norm(offset_delta(w_new, basis, "pca", components=2))
    d8 = np.linalg.norm(offset_delta(w_new, basis, "pca", components=8))
    assert d2 >= d8
    with pytest.raises(ValueError):
        parse_layers("0-9", NUM_WS)
    with pytest.raises(ValueError):
        apply_offset(traj, w_new, basis, components=99)
    with pytest.raises(ValueError):
        apply_offset(traj, w_new, basis, mode="sideways")


def test_pca_basis_roundtrip_and_store(tmp_path):
    from svgen.inversion.latent_store import LatentStore, LatentStoreWriter

    codes, _ = _actor(frames=120)
    w = LatentStoreWriter(tmp_path / "l.h5", space="w+", num_ws=NUM_WS, w_dim=W_DIM, generator_sha256="x")
    w.create_clip("a", 70)
    w.write("a", 0, codes[:70].astype(np.float32))
    w.create_clip("b", 50)
    w.write("b", 0, codes[70:].astype(np.float32))
    w.finalize()
    with LatentStore(tmp_path / "l.h5") as st:
        basis = fit_pca_from_store(st, n_components=6, chunk=16)
    ref = fit_pca([codes.astype(np.float32)], NUM_WS, W_DIM, n_components=6)
    np.testing.assert_allclose(basis.mean, ref.mean, atol=1e-5)
    again = PCABasis.from_dict(basis.to_dict())
    np.testing.assert_allclose(again.components, basis.components, atol=1e-6)
    assert (again.num_ws, again.w_dim, again.k) == (NUM_WS, W_DIM, 6)


def test_mean_mode_moves_the_motion_around_the_new_identity():
    """``mean``: the training codes' mean lands on w_new, so a trajectory of training-like states
    stays within the clip's own spread of w_new (what a pivotal-tuned generator renders well),
    where the PCA trick can leave it far away."""
    codes, _ = _actor()
    basis = fit_pca([codes], NUM_WS, W_DIM, n_components=32)
    w_new = np.random.default_rng(5).standard_normal((NUM_WS, W_DIM)) * 3
    out, info = apply_offset(codes, w_new, basis, mode="mean")
    np.testing.assert_allclose(out.mean(0), w_new, atol=1e-4)              # centred on the photo's code
    np.testing.assert_allclose(np.diff(out, axis=0), np.diff(codes, axis=0), atol=1e-4)   # same motion
    spread = np.linalg.norm((codes - codes.mean(0)).reshape(len(codes), -1), axis=1).mean()
    dist_mean = np.linalg.norm((out - w_new).reshape(len(out), -1), axis=1).mean()
    pca, _ = apply_offset(codes, w_new, basis, mode="pca")
    dist_pca = np.linalg.norm((pca - w_new).reshape(len(pca), -1), axis=1).mean()
    assert dist_mean == pytest.approx(spread, rel=1e-3) and dist_pca > 1.5 * dist_mean, (dist_mean, dist_pca)
    assert info["mode"] == "mean"
    with pytest.raises(ValueError, match="needs a PCA basis"):
        offset_delta(w_new, None, "mean")


def test_coarse_layers_follow_stylegan2s_entry_layout():
    """Blocks 4..R/8 with their toRGB entry (block 2^k uses entries 2k-5, 2k-4, 2k-3)."""
    assert coarse_layers(10, 64) == [0, 1, 2, 3]          # 4x4 and 8x8 of a 64 px generator
    assert coarse_layers(8, 32) == [0, 1]
    assert coarse_layers(14, 256) == list(range(8))       # up to 32x32
    assert coarse_layers(18, 1024) == list(range(12))


def test_hold_layers_keeps_the_other_layers_at_the_identity():
    rng = np.random.default_rng(0)
    seq = rng.standard_normal((7, NUM_WS, W_DIM)).astype(np.float32)
    w_id = rng.standard_normal((NUM_WS, W_DIM)).astype(np.float32)
    out = hold_layers(seq, w_id, [0, 2])
    np.testing.assert_array_equal(out[:, [0, 2]], seq[:, [0, 2]])
    rest = [k for k in range(NUM_WS) if k not in (0, 2)]
    np.testing.assert_array_equal(out[:, rest], np.broadcast_to(w_id[rest], out[:, rest].shape))
    assert hold_layers(seq, w_id, None) is seq
