"""Foundation: atomic writes, configs, errors, CLI error handling, dataset and latent-store round trips."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from svgen.inversion.latent_store import LatentStore, LatentStoreWriter, partial_path, write_pca
from svgen.preprocessing.dataset import AlignedDataset, AlignedDatasetWriter
from svgen.utils import SvgenError, atomic_write, config_from_dict, config_to_dict
from svgen.utils.seed import get_rng_state, seed_everything, set_rng_state


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as fh:
            fh.write("partial")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    with atomic_write(target, "w") as fh:
        fh.write("done")
    assert target.read_text() == "done"


def test_atomic_write_unwritable_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if subprocess.run(["test", "-w", str(ro)]).returncode == 0:
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(SvgenError, match="not writable"):
            with atomic_write(ro / "x.txt", "w") as fh:
                fh.write("x")
    finally:
        ro.chmod(0o700)


@dataclasses.dataclass
class _Inner:
    a: int = 1
    b: tuple = (1, 2)


@dataclasses.dataclass
class _Outer:
    name: str = "x"
    inner: _Inner = dataclasses.field(default_factory=_Inner)


def test_config_round_trip():
    cfg = _Outer(name="y", inner=_Inner(a=5, b=(3, 4)))
    back = config_from_dict(_Outer, config_to_dict(cfg) | {"unknown": 1})
    assert back == cfg


def test_rng_state_round_trip():
    import random

    import torch

    seed_everything(3)
    st = get_rng_state()
    a = (torch.rand(3), np.random.rand(), random.random())
    set_rng_state(st)
    b = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]


def test_error_is_one_line():
    e = SvgenError("bad\nthing   here", "/x/y.mp4")
    assert str(e) == "/x/y.mp4: bad thing here"


def test_cli_help_lists_commands(tmp_path):
    r = subprocess.run([sys.executable, "-m", "svgen.cli.main", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "preprocess" in r.stdout


def test_dataset_round_trip(tmp_path):
    out = tmp_path / "aligned.zip"
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
    with AlignedDatasetWriter(out, 16) as w:
        w.add_clip("a", source="a.mp4", fps=30.0)
        for i, f in enumerate(frames):
            w.add_frame("a", f, source_frame=i * 2, quad=[[0, 0], [0, 1], [1, 1], [1, 0]], detected=i != 2)
    ds = AlignedDataset(out)
    assert len(ds) == 5 and ds.resolution == 16
    assert np.array_equal(ds.read_clip("a"), frames)
    assert ds.clips["a"].fps == 30.0
    assert [f["detected"] for f in ds.clips["a"].frames] == [True, True, False, True, True]


def test_dataset_writer_failure_leaves_no_zip(tmp_path):
    out = tmp_path / "aligned.zip"
    with pytest.raises(ValueError):
        with AlignedDatasetWriter(out, 16) as w:
            w.add_clip("a")
            w.add_frame("a", np.zeros((8, 8, 3), np.uint8))
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_dataset_rejects_bad_files(tmp_path):
    bad = tmp_path / "x.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(SvgenError, match="not a zip"):
        AlignedDataset(bad)


def test_real_frames_fixture(real_frames_zip):
    ds = AlignedDataset(real_frames_zip)
    assert ds.resolution == 64 and len(ds) == 120 and len(ds.clips) == 2
    assert ds[0].std() > 10  # a real image, not a blank one


def test_latent_store_resume_and_read(tmp_path):
    out = tmp_path / "latents.h5"
    data = np.random.default_rng(0).standard_normal((100, 4, 8)).astype(np.float32)
    w = LatentStoreWriter(out, space="w+", num_ws=4, w_dim=8, generator_sha256="abc")
    w.create_clip("c", 100, fps=25.0)
    w.write("c", 0, data[:64])
    w.close()  # "crash"
    assert not out.exists() and partial_path(out).exists()
    with pytest.raises(SvgenError, match="generator_sha256"):
        LatentStoreWriter(out, space="w+", num_ws=4, w_dim=8, generator_sha256="zzz", resume=True)
    w = LatentStoreWriter(out, space="w+", num_ws=4, w_dim=8, generator_sha256="abc", resume=True)
    assert w.create_clip("c", 100, fps=25.0) == 64
    w.write("c", 64, data[64:])
    w.finalize()
    st = LatentStore(out)
    assert np.array_equal(st.read("c"), data)
    assert len(st.windows(25, stride=25)) == 4
    with pytest.raises(SvgenError, match="another generator"):
        st.check_generator("def")
    st.close()
    write_pca(out, np.zeros(3), np.eye(3), np.ones(3))
    with LatentStore(out) as st:
        assert st.read_pca()["components"].shape == (3, 3)


def test_latent_store_rejects_foreign_and_truncated(tmp_path):
    import h5py

    foreign = tmp_path / "f.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(SvgenError, match="not an svgen latent store"):
        LatentStore(foreign)
    trunc = tmp_path / "t.h5"
    trunc.write_bytes(foreign.read_bytes()[:100])
    with pytest.raises(SvgenError, match="not a readable HDF5"):
        LatentStore(trunc)


def test_prefetch_keeps_order_raises_in_place_and_stops_early():
    from svgen.utils.prefetch import prefetch

    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        yield 2
        raise RuntimeError("boom at 3")

    got = []
    with pytest.raises(RuntimeError, match="boom at 3"):
        for x in prefetch(failing()):
            got.append(x)
    assert got == [1, 2]

    produced = []

    def endless():
        k = 0
        while True:
            produced.append(k)
            yield k
            k += 1

    gen = prefetch(endless(), depth=2)
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()                       # joins the producer thread: it must notice and stop
    n = len(produced)
    assert n <= 3 + 2 + 1
    assert len(produced) == n         # nothing more is produced after close


def test_one_generator_sha256_check(tmp_path) -> None:
    """Every artifact that records its generator is checked by utils.io.check_generator_sha256."""
    from svgen.utils.io import check_generator_sha256

    check_generator_sha256("", "b" * 64, "encoder was trained against", tmp_path / "e.pt")       # nothing recorded
    check_generator_sha256("a" * 64, "a" * 64, "encoder was trained against", tmp_path / "e.pt")  # the same file
    with pytest.raises(SvgenError) as err:
        check_generator_sha256("a" * 64, "b" * 64, "encoder was trained against", tmp_path / "e.pt", generator="g.pt")
    assert str(err.value) == (f"{tmp_path / 'e.pt'}: encoder was trained against another generator "
                              f"(it records {'a' * 12}, g.pt is {'b' * 12})")


_MAPPED_CHECK = """
import os, sys
import torch
from svgen.utils.device import mapped_temporaries, release_memory
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
big = torch.ones(30 << 18)   # a freed 30 MiB mapping raises glibc's mmap threshold to 30 MiB
del big
release_memory()
with mapped_temporaries():
    base = rss()
    held, kept = [], []
    for _ in range(16):                               # 16 x 4 MiB, touched, between small live ones
        held.append(torch.ones(1 << 20))
        kept.append(torch.ones(1 << 14))
    grown = rss() - base
    del held
    left = rss() - base
print(grown, left)
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads Linux's /proc")
def test_mapped_temporaries_return_freed_tensors_to_the_system():
    """Inside ``mapped_temporaries`` a freed 64 MiB of 4 MiB tensors leaves the process at once, though
    small tensors still live between them (glibc would otherwise keep the blocks, below its raised mmap
    threshold, as holes in the heap: 64 MiB stay resident). In a fresh interpreter:
    what earlier tests left in this one's heap would blur the figures."""
    out = subprocess.run([sys.executable, "-c", _MAPPED_CHECK], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.split()
    grown, left = float(out[0]), float(out[1])
    assert grown > 48 and left < 16, (grown, left)
