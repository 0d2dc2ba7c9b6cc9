"""Training windows streamed from latents.h5: coverage, content, determinism, skipping, errors."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from svgen.inversion.latent_store import LatentStore, LatentStoreWriter
from svgen.stage2_motion.gru.data import WindowSampler
from svgen.utils.errors import SvgenError




def _store(path, lengths=(53, 40, 7), num_ws=2, w_dim=3, space="w+"):
    """Frame f of clip c holds the value 1000 * c + f everywhere, so windows can be identified."""
    w = LatentStoreWriter(path, space=space, num_ws=num_ws, w_dim=w_dim, generator_sha256="g")
    for c, n in enumerate(lengths):
        shape = (n, num_ws, w_dim) if space == "w+" else (n, w_dim)
        vals = (1000 * c + np.arange(n, dtype=np.float32)).reshape((n,) + (1,) * (len(shape) - 1))
        w.create_clip(f"c{c}", n, fps=25.0)
        w.write(f"c{c}", 0, np.broadcast_to(vals, shape).astype(np.float32))
    w.finalize()
    return LatentStore(path)


def _ids(batch):
    return [(int(x[0, 0, 0]) // 1000, int(x[0, 0, 0]) % 1000) for x in batch]


def test_epoch_is_one_pass_over_all_windows(tmp_path):
    st = _store(tmp_path / "l.h5")
    s = WindowSampler(st, window=5, batch=4, seed=0, block_frames=16, blocks_in_memory=2, drop_last=False)
    seen = Counter()
    for batch in s.epoch(0):
        assert batch.shape[1:] == (5, 2, 3) and batch.dtype == np.float32
        for b, (clip, start) in zip(batch, _ids(batch)):
            np.testing.assert_array_equal(b[:, 0, 0], 1000 * clip + start + np.arange(5))  # consecutive frames
            seen[(clip, start)] += 1
    assert all(v == 1 for v in seen.values())
    assert {c for c, _ in seen} == {0, 1, 2}
    # non-overlapping tiling of each clip at one phase
    for clip, n in ((0, 53), (1, 40)):
        starts = sorted(s_ for c, s_ in seen if c == clip)
        assert np.all(np.diff(starts) == 5) and starts[0] < 5 and starts[-1] + 5 > n - 5
    assert sum(seen.values()) == s.windows_per_epoch(0)


def test_short_clip_included_when_long_enough_and_phases_vary(tmp_path):
    st = _store(tmp_path / "l.h5", lengths=(60, 7))
    s = WindowSampler(st, window=7, batch=3, seed=1, drop_last=False)
    first = {}
    covered = set()
    for ep in range(12):
        ids = [w for batch in s.epoch(ep) for w in _ids(batch)]
        assert (1, 0) in ids                                   # a clip of exactly t frames has one window
        first[ep] = min(st_ for c, st_ in ids if c == 0)
        covered.update(st_ for c, st_ in ids if c == 0)
    assert len(set(first.values())) > 1                        # the phase changes between epochs
    assert len(covered) > 30                                   # over epochs most start positions are used


def test_plan_is_deterministic_and_skip_resumes(tmp_path):
    st = _store(tmp_path / "l.h5")
    s = WindowSampler(st, window=4, batch=5, seed=3, block_frames=8, blocks_in_memory=1)
    a = [_ids(b) for b in s.epoch(2)]
    b = [_ids(b) for b in WindowSampler(st, window=4, batch=5, seed=3, block_frames=8,
                                        blocks_in_memory=1).epoch(2)]
    assert a == b and len(a) == s.batches_per_epoch(2)
    assert all(len(x) == 5 for x in a)                         # drop_last
    assert [_ids(x) for x in s.epoch(2, skip=3)] == a[3:]
    assert a != [_ids(x) for x in s.epoch(3)]
    # shuffled across clips, not clip by clip
    clips_in_first = {c for c, _ in a[0] + a[1]}
    assert len(a) > 2 and (len(clips_in_first) > 1 or a[0] != sorted(a[0]))


def test_w_space_store_is_broadcast_to_wplus(tmp_path):
    st = _store(tmp_path / "l.h5", lengths=(20,), space="w")
    s = WindowSampler(st, window=6, batch=2, seed=0)
    batch = next(iter(s.epoch(0)))
    assert batch.shape == (2, 6, 2, 3)
    np.testing.assert_array_equal(batch[:, :, 0], batch[:, :, 1])


def test_too_short_clips_fail_clearly(tmp_path):
    st = _store(tmp_path / "l.h5", lengths=(10, 12))
    with pytest.raises(SvgenError, match="no clip has the 25 frames"):
        WindowSampler(st, window=25, batch=4)


def test_in_memory_cache_gives_the_streamed_batches(tmp_path):
    """A store under ``cache_bytes`` is read once and kept; the batches equal the streamed ones."""
    st = _store(tmp_path / "l.h5")
    cached = WindowSampler(st, window=5, batch=4, seed=3, block_frames=16, blocks_in_memory=2)
    streamed = WindowSampler(st, window=5, batch=4, seed=3, block_frames=16, blocks_in_memory=2, cache_bytes=0)
    assert cached.cache == {} and streamed.cache is None
    for epoch in (0, 1):
        a, b = list(cached.epoch(epoch)), list(streamed.epoch(epoch))
        assert len(a) == len(b) > 0
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert set(cached.cache) == {"c0", "c1", "c2"}
