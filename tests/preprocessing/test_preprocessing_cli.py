"""``svgen preprocess`` / ``svgen align-photo`` from the command line: results, summaries, bad input."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
from PIL import Image

from svgen.preprocessing.dataset import AlignedDataset
from svgen.preprocessing.video_io import ffmpeg_exe, iter_frames, write_video

from clitools import run_cli


def _error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("svgen: error: "), err
    return lines[0]


def _no_dataset_left(folder) -> None:
    leftovers = [p.name for p in folder.iterdir() if p.suffix == ".zip" or ".zip." in p.name]
    assert leftovers == [], leftovers


def test_preprocess_cli_writes_dataset_and_summary(shared, tmp_path, capsys):
    v = shared / "data" / "videos"
    out = tmp_path / "work" / "aligned.zip"
    code, stdout, err = run_cli(capsys, "preprocess", v / "dreamtalk_mead" / "W011_front_sad_level3_001.mp4",
                                v / "pyfeat" / "single_face.mp4", "--out", out, "--size", "32",
                                "--max-frames", "30", "--smooth", "2", "--summary-json", tmp_path / "s.json")
    assert code == 0, err
    assert "W011_front_sad_level3_001.mp4: 30/30 frames kept, 0 interpolated" in stdout
    assert "single_face.mp4: 30/30 frames kept" in stdout and "total: 60 frames in 2 clip(s)" in stdout
    ds = AlignedDataset(out)
    assert set(ds.clips) == {"W011_front_sad_level3_001", "single_face"} and ds[0].shape == (32, 32, 3)
    assert ds.meta["preprocess"]["smooth"] == 2.0
    assert (tmp_path / "s.json").is_file()


def test_align_photo_cli_and_image_modes(shared, tmp_path, capsys):
    src = Image.open(shared / "data" / "photos" / "face_recognition" / "obama.jpg").convert("RGB")
    src = src.resize((src.width // 2, src.height // 2))
    # (greyscale, palette and RGBA conversions are covered in test_preprocessing_alignment.py)
    variants = {
        "cmyk.jpg": src.convert("CMYK"),
        "grey16.png": Image.fromarray(np.asarray(src.convert("L")).astype(np.uint16) * 257),
    }
    for name, im in variants.items():
        im.save(tmp_path / name)
    for photo in [tmp_path / n for n in variants]:
        out = tmp_path / f"{photo.stem}_aligned.png"
        code, stdout, err = run_cli(capsys, "align-photo", photo, "--out", out, "--size", "64")
        assert code == 0, (photo, err)
        img = Image.open(out)
        assert img.size == (64, 64) and img.mode == "RGB"
        assert "1 face(s) found" in stdout


def test_align_photo_two_faces(shared, tmp_path, capsys):
    photo = shared / "data" / "photos" / "face_recognition" / "two_people.jpg"
    code, _, err = run_cli(capsys, "align-photo", photo, "--out", tmp_path / "a.png", "--size", "32")
    assert code == 0 and "svgen: warning:" in err and "using the largest" in err
    code, _, err = run_cli(capsys, "align-photo", photo, "--out", tmp_path / "b.png", "--size", "32",
                           "--strict")
    assert code == 1 and "exactly one" in _error_line(err) and str(photo) in err
    assert not (tmp_path / "b.png").exists()


def test_bad_video_inputs_fail_cleanly(shared, tmp_path, capsys):
    good = shared / "data" / "videos" / "pyfeat" / "single_face.mp4"
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[:50000])
    faststart = tmp_path / "fs.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(good), "-c", "copy",
                    "-movflags", "+faststart", str(faststart)], check=True)
    cut2 = tmp_path / "cut2.mp4"
    cut2.write_bytes(faststart.read_bytes()[:120000])
    # a real video without a face: a corner of a MEAD clip (background only)
    mead = shared / "data" / "videos" / "dreamtalk_mead" / "M030_front_neutral_level1_001.mp4"
    noface = tmp_path / "noface.mp4"
    write_video(noface, (f[:64, :64] for f in iter_frames(mead, max_frames=15)), fps=25)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    cases = [((text,), "not a"), ((empty,), "empty"), ((cut,), "not a complete mp4"),
             ((cut2,), "truncated"), ((noface,), "no face found"), ((good, text), "not a")]
    for inputs, pattern in cases:
        code, _, err = run_cli(capsys, "preprocess", *inputs, "--out", out_dir / "aligned.zip",
                               "--size", "32")
        line = _error_line(err)
        assert code == 1 and pattern in line, (inputs, err)
        _no_dataset_left(out_dir)
    # a good video with a failing one after it: nothing half-written either
    code, _, err = run_cli(capsys, "preprocess", good, noface, "--out", out_dir / "aligned.zip",
                           "--size", "32", "--max-frames", "20")
    assert code == 1 and str(noface) in _error_line(err)
    _no_dataset_left(out_dir)


def test_unwritable_output_and_usage_errors(shared, tmp_path, capsys):
    good = shared / "data" / "videos" / "pyfeat" / "single_face.mp4"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, "preprocess", good, "--out", blocker / "aligned.zip", "--size", "32")
    assert code == 1 and str(blocker) in _error_line(err)
    photo = shared / "data" / "photos" / "face_recognition" / "obama.jpg"
    code, _, err = run_cli(capsys, "align-photo", photo, "--out", blocker / "a.png")
    assert code == 1 and str(blocker) in _error_line(err)
    code, _, err = run_cli(capsys, "align-photo", tmp_path / "file", "--out", tmp_path / "a.png")
    assert code == 1 and "not an image" in _error_line(err)
    code, _, err = run_cli(capsys, "preprocess", good, "--out", tmp_path / "x.zip", "--size", "0")
    assert code == 2
    code, _, err = run_cli(capsys, "preprocess", good, "--out", tmp_path / "x.zip", "--box", "1,2,3")
    assert code == 2


def test_face_alignment_backend_explains_what_is_missing(shared, tmp_path, capsys):
    pytest.importorskip("dlib")
    try:
        import face_alignment  # noqa: F401
        pytest.skip("face-alignment is installed here")
    except ImportError:
        pass
    good = shared / "data" / "videos" / "pyfeat" / "single_face.mp4"
    code, _, err = run_cli(capsys, "preprocess", good, "--out", tmp_path / "a.zip", "--landmarks",
                           "face-alignment", "--device", "cpu")
    line = _error_line(err)
    assert code == 1 and "pip install face-alignment" in line and "hub" in line and "never downloads" in line
    _no_dataset_left(tmp_path)


def test_face_alignment_weights_must_already_be_on_disk(tmp_path, monkeypatch):
    """With the package importable but no weights in torch.hub's folder: a clear error, no download."""
    import sys
    import types

    from svgen.preprocessing.landmarks import FanLandmarks
    from svgen.utils.errors import SvgenError

    fake = types.ModuleType("face_alignment")
    api = types.ModuleType("face_alignment.api")
    url = "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-cd938726ad.zip"
    api.default_model_urls = {"2DFAN-4": url}
    fake.api = api
    monkeypatch.setitem(sys.modules, "face_alignment", fake)
    monkeypatch.setitem(sys.modules, "face_alignment.api", api)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(SvgenError) as exc:
        FanLandmarks(device="cpu")
    msg = str(exc.value)
    assert "2DFAN4-cd938726ad.zip" in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg
