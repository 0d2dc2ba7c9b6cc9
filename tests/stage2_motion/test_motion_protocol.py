"""Both motion models satisfy the MotionModel protocol the pipeline relies on, and train-motion
refuses options that do not apply to the chosen model instead of ignoring them."""
from __future__ import annotations

from pathlib import Path

import pytest

from clitools import run_cli

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden_motion"


@pytest.mark.parametrize("name, cls", [("gru.pt", "GRUMotion"), ("styleinv.pt", "StyleInVMotion")])
def test_loaded_models_are_motion_models(name, cls):
    from svgen.stage2_motion import MotionModel, load_motion

    m = load_motion(GOLDEN / name)
    assert isinstance(m, MotionModel) and type(m).__name__ == cls
    assert (m.num_ws, m.w_dim, m.train_fps) == (8, 128, 25.0) and m.model_name == name[:-3]
    assert (m.pca is None) == (name == "styleinv.pt")


@pytest.mark.parametrize("model, option", [("styleinv", ["--stride", "4"]), ("styleinv", ["--lambda-gap", "0"]),
                                           ("styleinv", ["--n-critic", "2"]), ("gru", ["--disc", "latent"]),
                                           ("gru", ["--data", "aligned.zip"])])
def test_train_motion_refuses_options_of_the_other_model(model, option, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train-motion", "--latents", tmp_path / "latents.h5", "--model", model,
                           "--out", tmp_path / "run", *option)
    other = "gru" if model == "styleinv" else "styleinv"
    assert code == 2 and f"{option[0]} does not apply to --model {model} (only to --model {other})" in err, err
    assert not (tmp_path / "run").exists()


def test_gru_streamed_in_chunks_is_the_one_pass_trajectory():
    """The GRU memory is carried from chunk to chunk: any chunking gives the one-pass trajectory, and
    the streamed resampling (other fps) and offset trick give animate_latents' frames exactly."""
    import numpy as np
    import torch

    from svgen.stage2_motion import load_motion
    from svgen.stage2_motion.gru.motion import resample_stream, resample_trajectory

    m = load_motion(GOLDEN / "gru.pt")
    whole = m.sample(2, 61, seed=4, chunk=256)
    for chunk in (7, 60, 256):
        parts = list(m.sample_chunks(2, 61, seed=4, chunk=chunk))
        assert [p.shape[1] for p in parts][:2] == [1, min(chunk, 60)]
        assert torch.equal(torch.cat(parts, dim=1), whole)
    # one frame per chunk takes another matrix-product path: the same trajectory to float rounding
    single = torch.cat(list(m.sample_chunks(2, 61, seed=4, chunk=1)), dim=1)
    assert torch.allclose(single, whole, rtol=0, atol=1e-5)
    w_id = whole[1, 0].numpy()
    ref = m.animate_latents(w_id, 90, fps=17.0, seed=2, offset="pca", chunk=256)
    got = np.concatenate(list(m.animate_chunks(w_id, 90, fps=17.0, seed=2, offset="pca", chunk=256)))
    assert got.dtype == np.float32 and np.array_equal(got, ref)
    for chunk in (5, 64):       # other GRU chunkings: matrix products round differently in the last bits
        got = np.concatenate(list(m.animate_chunks(w_id, 90, fps=17.0, seed=2, offset="pca", chunk=chunk)))
        assert got.shape == ref.shape and np.allclose(got, ref, rtol=0, atol=1e-5)
    traj = np.random.default_rng(0).standard_normal((23, 3))
    for native_chunk, frames, chunk in ((4, 50, 6), (23, 9, 2), (1, 23, 23)):
        pieces = [traj[a:a + native_chunk] for a in range(0, 23, native_chunk)]
        got = np.concatenate(list(resample_stream(pieces, 23, frames, chunk)))
        assert np.array_equal(got, resample_trajectory(traj, frames))


def test_styleinv_streamed_in_chunks_is_the_one_pass_trajectory():
    import numpy as np
    import torch

    from svgen.stage2_motion import load_motion

    m = load_motion(GOLDEN / "styleinv.pt")
    whole = m.sample(2, 23, seed=1, chunk=5)
    assert torch.equal(torch.cat(list(m.sample_chunks(2, 23, seed=1, chunk=5)), dim=1), whole)
    w_id = whole[0, 3].numpy()
    ref = m.animate_latents(w_id, 23, fps=50.0, seed=3, chunk=5)
    assert np.array_equal(np.concatenate(list(m.animate_chunks(w_id, 23, fps=50.0, seed=3, chunk=5))), ref)


def test_npy_writer_fills_a_k_by_t_array_block_by_block(tmp_path):
    import numpy as np

    from svgen.pipeline.stream import NpyWriter, rechunk

    data = np.random.default_rng(1).standard_normal((3, 50, 2, 4)).astype(np.float32)
    with NpyWriter(tmp_path / "x.npy", data.shape) as npy:
        for block_t in rechunk((data[:, a:a + 7].swapaxes(0, 1) for a in range(0, 50, 7)), 16):
            block = block_t.swapaxes(0, 1)
            npy.write(block, npy.written)
    assert npy.written == 50
    assert np.array_equal(np.load(tmp_path / "x.npy"), data)
    with pytest.raises(ValueError, match="does not fit"):
        with NpyWriter(tmp_path / "y.npy", (1, 4, 2)) as bad:
            bad.write(np.zeros((1, 5, 2), np.float32), 0)
