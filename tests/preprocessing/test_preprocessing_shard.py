"""``svgen preprocess --workers N`` (processes over videos and over a long video's chunks), ``--shard
I/N`` and ``svgen merge-datasets``, on real clips: the results equal the one-process, unsharded
dataset byte for byte."""
from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest

from svgen.preprocessing.dataset import AlignedDataset
from svgen.preprocessing.videos import preprocess_videos
from svgen.preprocessing.video_io import iter_frames, iter_frames_indexed, write_video

from clitools import ok_cli, run_cli


def _contents(path) -> tuple[dict, dict]:
    """(dataset.json, {member: bytes}) of a zip."""
    with zipfile.ZipFile(path) as zf:
        meta = json.loads(zf.read("dataset.json"))
        return meta, {n: zf.read(n) for n in zf.namelist() if n != "dataset.json"}


def _error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("svgen: error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def gap_video(shared, tmp_path_factory):
    """A real MEAD clip with the face gone for 4 frames (interpolated) and 30 frames (split)."""
    mead = shared / "data" / "videos" / "dreamtalk_mead" / "M030_front_neutral_level1_001.mp4"
    frames = list(iter_frames(mead, max_frames=94))
    for i in list(range(25, 29)) + list(range(50, 80)):
        frames[i] = np.zeros_like(frames[i])
    video = tmp_path_factory.mktemp("gapvid") / "gaps.mp4"
    write_video(video, frames, fps=25)
    return video


def test_decoding_from_a_start_frame_is_exact(shared):
    video = shared / "data" / "videos" / "pyfeat" / "WolfgangLanger_Pexels.mp4"   # 23.98 fps
    for fps in (None, 25.0):
        full = [(i, f.copy()) for i, f in iter_frames_indexed(video, fps=fps, max_frames=60)]
        tail = [(i, f.copy()) for i, f in iter_frames_indexed(video, fps=fps, max_frames=20, start=40)]
        assert [i for i, _ in tail] == [i for i, _ in full[40:60]]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(tail, full[40:60]))


def test_workers_and_chunks_give_the_one_process_dataset(shared, gap_video, tmp_path):
    """Two processes, a long video cut into chunks of 20 frames (face segments, gap filling and the
    low-pass all cross chunk boundaries): the same bytes as one process."""
    videos = [gap_video, shared / "data" / "videos" / "dpe" / "d.mp4",
              shared / "data" / "videos" / "pyfeat" / "single_face.mp4"]
    kw = dict(size=32, max_frames=100, chunk_frames=20, show_progress=False)
    one = preprocess_videos(videos, tmp_path / "one.zip", workers=1, **kw)
    two = preprocess_videos(videos, tmp_path / "two.zip", workers=2, **kw)
    assert one["videos"][0]["clips"] == {"gaps": 50, "gaps_part2": 14}      # split at frame 50..80
    assert one["videos"][0]["interpolated"] == 4 and one["videos"][1]["kept"] == 100
    for a, b in zip(one["videos"], two["videos"]):
        for key in ("frames", "kept", "interpolated", "dropped", "clips", "short_segments", "tracker"):
            assert a[key] == b[key], key
    meta1, files1 = _contents(tmp_path / "one.zip")
    meta2, files2 = _contents(tmp_path / "two.zip")
    assert meta1 == meta2 and files1 == files2 and len(files1) == 100 + 64 + 72


def test_chunk_restarts_move_the_crop_by_little(shared, tmp_path):
    """A fresh detection at every chunk start is the only difference chunking makes; on a real
    clip with head motion the crops stay within a small fraction of a pixel of one unbroken track."""
    video = shared / "data" / "videos" / "dpe" / "d.mp4"            # 256x256, face ~120 px
    quads = {}
    for chunk in (1500, 25):
        out = tmp_path / f"c{chunk}.zip"
        preprocess_videos([video], out, size=32, max_frames=150, chunk_frames=chunk, show_progress=False)
        quads[chunk] = np.array([f["quad"] for f in AlignedDataset(out).clips["d"].frames])
    diff = np.abs(quads[25] - quads[1500]).max()
    side = np.hypot(*(quads[1500][:, 3] - quads[1500][:, 0]).T).mean()
    assert diff < 0.01 * side, (diff, side)      # README: under 1 % of the crop side


def test_sharded_preprocess_merged_equals_unsharded(capsys, shared, gap_video, tmp_path):
    # two inputs with one stem (named gaps and gaps_2 in any shard), three shards over four videos
    other = tmp_path / "b" / "gaps.mp4"
    other.parent.mkdir()
    shutil.copy(gap_video, other)
    videos = [gap_video, shared / "data" / "videos" / "dpe" / "d.mp4", other,
              shared / "data" / "videos" / "pyfeat" / "single_face.mp4"]
    common = ["--size", "32", "--max-frames", "60"]
    ok_cli(capsys, "preprocess", *videos, "--out", tmp_path / "all.zip", *common)
    parts = [tmp_path / f"s{i}.zip" for i in range(3)]
    for i, p in enumerate(parts):
        ok_cli(capsys, "preprocess", *videos, "--out", p, "--shard", f"{i}/3", "--workers", "2", *common)
    assert list(AlignedDataset(parts[2]).clips) == ["gaps_2", "single_face"]
    out, _ = ok_cli(capsys, "merge-datasets", parts[2], parts[0], parts[1], "--out", tmp_path / "m.zip")
    assert "3 part(s)" in out and "4 clip(s)" in out
    meta_all, files_all = _contents(tmp_path / "all.zip")
    meta_m, files_m = _contents(tmp_path / "m.zip")
    assert list(meta_m["clips"]) == ["gaps", "d", "gaps_2", "single_face"]
    assert meta_m == meta_all and files_m == files_all

    # refusals name the part that differs
    ok_cli(capsys, "preprocess", videos[3], "--out", tmp_path / "smooth.zip", "--size", "32",
           "--max-frames", "60", "--smooth", "1")
    code, _, err = run_cli(capsys, "merge-datasets", tmp_path / "all.zip", tmp_path / "smooth.zip",
                           "--out", tmp_path / "x.zip")
    assert code == 1 and f"{tmp_path / 'smooth.zip'}: was made with other alignment settings" in _error(err)
    assert "smooth: 1.0 vs 3.0" in err
    code, _, err = run_cli(capsys, "merge-datasets", parts[0], parts[2], "--out", tmp_path / "x.zip")
    assert code == 1 and "shard(s) 1/3 of this split are missing" in _error(err)
    code, _, err = run_cli(capsys, "merge-datasets", tmp_path / "all.zip", tmp_path / "m.zip",
                           "--out", tmp_path / "x.zip")
    assert code == 1 and f"{tmp_path / 'm.zip'}: clip 'gaps' is already in another part" in _error(err)
    assert not list(tmp_path.glob("x.zip*"))
    code, _, err = run_cli(capsys, "preprocess", *videos, "--out", tmp_path / "x.zip", "--shard", "1of3")
    assert code == 1 and "I/N" in _error(err)
