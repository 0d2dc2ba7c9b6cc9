"""``svgen invert --shard I/N`` over a dataset's clips and ``svgen merge-latents``: the merged shards
equal the unsharded store (real clips), and parts of other generators, encoders or splits are refused
with the file named."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from svgen.inversion.latent_store import LatentStore
from svgen.utils.io import file_sha256, torch_save_atomic
from svgen.utils.shard import parse_shard, shard_from_env, shard_slice
from svgen.utils.errors import SvgenError

from clitools import ok_cli, run_cli


def _encoder(generator: Path, out: Path, seed: int) -> Path:
    """An untrained W+ encoder saved against ``generator`` (the latents' values do not matter here)."""
    from svgen.inversion.encoders import build_encoder, encoder_checkpoint, make_encoder_config
    from svgen.stage1_image_gan.checkpoints import load_generator

    G = load_generator(generator)
    torch.manual_seed(seed)
    E = build_encoder(make_encoder_config("w+", "tiny", G.num_ws, G.w_dim, G.img_resolution), G.mapping.w_avg)
    torch_save_atomic(encoder_checkpoint(E, None, file_sha256(generator)), out)
    return out


@pytest.fixture(scope="module")
def encoders(random_generator_path, tmp_path_factory):
    d = tmp_path_factory.mktemp("shard_enc")
    return _encoder(random_generator_path, d / "a.pt", 0), _encoder(random_generator_path, d / "b.pt", 1)


def _error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("svgen: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_shard_parsing_and_split():
    assert parse_shard("1/4") == (1, 4) and parse_shard(" 0 / 1 ") == (0, 1)
    for bad in ("4/4", "1", "-1/2", "a/b", "0/0"):
        with pytest.raises(SvgenError, match="I/N"):
            parse_shard(bad)
    # contiguous blocks covering every item once, sizes differing by at most one
    for count in (1, 5, 7, 26):
        for n in (1, 2, 3, 8):
            blocks = [list(shard_slice(count, (i, n))) for i in range(n)]
            assert sum(blocks, []) == list(range(count))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    assert shard_from_env({"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "10",
                           "SLURM_ARRAY_TASK_COUNT": "4"}) == (2, 4)
    assert shard_from_env({"RANK": "3", "WORLD_SIZE": "8"}) == (3, 8)
    assert shard_from_env({}) is None


def test_sharded_invert_merged_equals_unsharded(capsys, random_generator_path, encoders, short_zip20, tmp_path):
    enc_a, enc_b = encoders
    base = ["invert", "--generator", random_generator_path, "--data", short_zip20, "--batch", "8",
            "--refine-steps", "2", "--temporal-weight", "1.0"]
    full = tmp_path / "full.h5"
    ok_cli(capsys, *base, "--encoder", enc_a, "--out", full)
    parts = [tmp_path / f"part{i}.h5" for i in range(2)]
    for i, p in enumerate(parts):
        ok_cli(capsys, *base, "--encoder", enc_a, "--out", p, "--shard", f"{i}/2")
    with LatentStore(parts[0]) as s0, LatentStore(parts[1]) as s1, LatentStore(full) as f:
        assert len(f.clips) == 2 and len(s0.clips) == len(s1.clips) == 1 and s0.clips != s1.clips
    merged = tmp_path / "merged.h5"
    out, _ = ok_cli(capsys, "merge-latents", parts[1], parts[0], "--out", merged)   # any order
    assert "2 clip(s), 40 frames" in out
    with LatentStore(full) as a, LatentStore(merged) as b:
        assert a.clips == b.clips
        for c in a.clips:
            assert np.array_equal(a.read(c), b.read(c)), c     # bit for bit
            assert np.array_equal(a.detected(c), b.detected(c))
            assert (a.fps(c), a.source(c), a.num_frames(c)) == (b.fps(c), b.source(c), b.num_frames(c))
    with h5py.File(full, "r") as fa, h5py.File(merged, "r") as fb:
        for key in ("generator_sha256", "encoder_sha256", "space", "batch", "refine_steps", "seed",
                    "data_sha256", "data_path"):
            assert fa.attrs[key] == fb.attrs[key], key
        assert "shard_index" not in fb.attrs
        assert fb.attrs["w_dist_codes"] == pytest.approx(fa.attrs["w_dist_codes"], rel=1e-9)
        assert fb.attrs["w_dist_ratio"] == pytest.approx(fa.attrs["w_dist_ratio"], rel=1e-9)

    # refusals, each naming the file that differs
    other = tmp_path / "other_encoder.h5"
    ok_cli(capsys, *base, "--encoder", enc_b, "--out", other, "--shard", "1/2")
    code, _, err = run_cli(capsys, "merge-latents", parts[0], other, "--out", tmp_path / "x.h5")
    assert code == 1 and f"{other}: was inverted with another encoder than {parts[0]}" in _error(err)
    code, _, err = run_cli(capsys, "merge-latents", parts[0], "--out", tmp_path / "x.h5")
    assert code == 1 and "shard(s) 1/2 of this split are missing" in _error(err)
    code, _, err = run_cli(capsys, "merge-latents", parts[0], full, "--out", tmp_path / "x.h5")
    assert code == 1 and f"{full}: is not a shard" in _error(err)
    code, _, err = run_cli(capsys, "merge-latents", parts[0], parts[0], "--out", tmp_path / "x.h5")
    assert code == 1 and "again" in _error(err)
    assert not (tmp_path / "x.h5").exists() and not list(tmp_path.glob("x.h5*"))
    code, _, err = run_cli(capsys, *base, "--encoder", enc_a, "--out", tmp_path / "y.h5", "--shard", "2/2")
    assert code == 1 and "I/N" in _error(err)
    code, _, err = run_cli(capsys, *base, "--encoder", enc_a, "--out", tmp_path / "y.h5", "--shard", "0/4")
    assert code == 1 and "selects no clip" in _error(err)
