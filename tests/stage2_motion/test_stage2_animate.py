"""`svgen animate` end to end (real photo -> align -> invert -> GRU motion + offset trick -> mp4) and
its failure modes. The chain uses real components at toy sizes: the untrained tiny generator fixture,
an untrained tiny W+ encoder, latents inverted from real MEAD frames and a GRU trained for 2 steps
(plumbing, not quality)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from svgen.utils.io import file_sha256

from clitools import run_cli as _cli
from motionchain import build_motion_chain


@pytest.fixture(scope="module")
def chain(random_generator_path, real_frames_zip32, tmp_path_factory):
    """(generator, encoder, motion.pt, G) trained against real inverted latents."""
    return build_motion_chain(random_generator_path, real_frames_zip32, tmp_path_factory.mktemp("animate"))


def _tuned_generator(G, cache_file):
    """The generator copy whose synthesis weights pivotal tuning cached in ``cache_file``."""
    import copy

    state = torch.load(cache_file, map_location="cpu", weights_only=True)
    tuned = copy.deepcopy(G)
    tuned.synthesis.load_state_dict(state["synthesis"])
    return tuned.eval()


def _photo(shared):
    return shared / "data" / "photos" / "hyperstyle_aligned" / "pitt.jpg"


def test_animate_writes_playable_mp4_latents_and_settings(chain, shared, tmp_path, capsys):
    from svgen.preprocessing.video_io import iter_frames, probe

    _, _, motion, G = chain
    out = tmp_path / "out.mp4"
    code, stdout, err = _cli(capsys, "animate", "--identity", _photo(shared), "--motion", motion,
                             "--frames", 30, "--fps", 20, "--seed", 3, "--out", out, "--device", "cpu")
    assert code == 0, err
    info = probe(out)
    assert info.num_frames == 30 and info.fps == pytest.approx(20.0)
    assert info.width == G.img_resolution and info.height == G.img_resolution
    frames = list(iter_frames(out))
    assert len(frames) == 30 and frames[0].shape == (G.img_resolution, G.img_resolution, 3)
    lat = np.load(out.with_suffix(".npy"))
    assert lat.shape == (1, 30, G.num_ws, G.w_dim) and np.isfinite(lat).all()
    settings = json.loads(out.with_suffix(".json").read_text())
    assert settings["settings"]["seed"] == 3 and settings["resolved"]["frames"] == 30
    assert settings["resolved"]["generator"] == str(chain[0].resolve())      # default from motion.pt
    assert settings["motion"][0]["offset"]["mode"] == "mean"        # auto: around the pivot with --tune pti
    assert settings["resolved"]["generator_sha256"] == file_sha256(chain[0])
    # auto motion layers with PTI: only the 4x4 block's entries move at 32 px; the finer ones stay at
    # the photo's code in every frame
    assert settings["resolved"]["motion_layers"] == [0, 1]
    np.testing.assert_array_equal(lat[0, :, 2:], np.broadcast_to(lat[0, :1, 2:], lat[0, :, 2:].shape))
    assert np.abs(lat[0, 1:, :2] - lat[0, :1, :2]).max() > 1e-4          # (a 2-step GRU moves little)
    # the identity photo was pivotal-tuned (default --tune pti): the tuned copy renders the photo
    # at the pivot far better than the frozen generator, and it was cached for the next call
    pti = settings["pivotal_tuning"]
    assert pti["psnr_after"] > pti["psnr_before"] + 5 and not pti["cache_hit"], pti
    tuned = _tuned_generator(G, pti["cache"])
    # the rendered video shows these latents through the tuned generator: re-render frame 5
    with torch.no_grad():
        img = tuned.synthesis(torch.from_numpy(lat[0, 5:6]), noise_mode="const")
    ref = ((img.clamp(-1, 1) + 1) * 127.5).round().byte()[0].permute(1, 2, 0).numpy()
    assert np.abs(ref.astype(float) - frames[5].astype(float)).mean() < 12    # lossy H.264 of 32 px frames
    # PTI's mouth term (on by default) needs the motion's mouth as the generator renders it: this untrained
    # generator draws no face, so the term is off, and the .json and a warning say why
    assert pti["mouth"] == {"used": False, "reason": pti["mouth"]["reason"]}, pti["mouth"]
    assert "rendered frames with a face" in pti["mouth"]["reason"] and "mouth term is off" in err, err


def test_animate_mouth_term_off_where_it_cannot_be_measured(chain, shared, tmp_path, capsys):
    """``--tune-mouth``: the mouth direction is fitted on the motion's training store (motion.pt's
    ``latents_ref``) as the generator renders it. When the generator draws no face (this one is untrained) or
    the store is gone, the animation is still made, without the term, and the .json and a warning say why."""
    _, _, motion, _ = chain

    def run(motion_file, mouth: int) -> tuple[str, object]:
        out = tmp_path / f"out{mouth}.mp4"
        code, _, err = _cli(capsys, "animate", "--identity", _photo(shared), "--motion", motion_file, "--frames", 4,
                            "--tune-mouth", mouth, "--tune-steps", 5, "--tune-cache", tmp_path / "cache",
                            "--out", out, "--device", "cpu")
        assert code == 0, err
        return err, json.loads(out.with_suffix(".json").read_text())["pivotal_tuning"]["mouth"]

    err, mouth = run(motion, 1)
    assert mouth == {"used": False, "reason": mouth["reason"]} and "rendered frames with a face" in mouth["reason"]
    assert "svgen: warning: PTI's mouth term is off" in err, err
    ckpt = torch.load(motion, map_location="cpu", weights_only=False)
    ckpt["latents_ref"]["path"] = str(tmp_path / "moved_away.h5")
    moved = tmp_path / "motion.pt"
    torch.save(ckpt, moved)
    err, mouth = run(moved, 1)
    assert mouth["used"] is False and "moved_away.h5 is not there" in mouth["reason"], mouth
    assert "svgen: warning: PTI's mouth term is off" in err and "moved_away.h5" in err, err
    err, mouth = run(moved, 0)
    assert mouth is None and "mouth term" not in err, err


def test_animate_grid_naive_offset_and_driving(chain, shared, tmp_path, capsys):
    from svgen.preprocessing.video_io import probe

    gen, enc, motion, G = chain
    out = tmp_path / "grid.mp4"
    code, _, err = _cli(capsys, "animate", "--identity", _photo(shared), "--motion", motion, "--generator", gen,
                        "--encoder", enc, "--frames", 6, "--grid", 3, "--offset", "naive", "--landmarks", "none",
                        "--tune-motion", 0, "--out", out)
    assert code == 0, err
    info = probe(out)
    assert (info.width, info.height, info.num_frames) == (3 * G.img_resolution, G.img_resolution, 6)
    lat = np.load(out.with_suffix(".npy"))
    assert lat.shape == (3, 6, G.num_ws, G.w_dim)
    assert not np.allclose(lat[0], lat[1])                                  # different seeds
    np.testing.assert_allclose(lat[0, 0], lat[1, 0], atol=1e-4)             # naive: all start at the identity

    drive = tmp_path / "drive.mp4"
    video = shared / "data" / "videos" / "dreamtalk_mead" / "M030_front_neutral_level1_001.mp4"
    # (the photo and the MEAD clip are already aligned crops: skip landmark detection here)
    code, _, err = _cli(capsys, "animate", "--identity", _photo(shared), "--driving", video, "--generator", gen,
                        "--encoder", enc, "--frames", 12, "--landmarks", "none", "--tune-motion", 0, "--out", drive)
    assert code == 0, err
    info = probe(drive)
    assert info.num_frames == 12 and info.fps == pytest.approx(25.0)
    settings = json.loads(drive.with_suffix(".json").read_text())
    assert settings["motion"][0]["source"] == "driving"
    # without the motion term a photo's tuning serves every motion: the driving transfer renders through
    # the same tuned generator, taken from the cache
    grid_tuning = json.loads(out.with_suffix(".json").read_text())["pivotal_tuning"]
    assert settings["pivotal_tuning"]["cache_hit"] and settings["pivotal_tuning"]["cache"] == grid_tuning["cache"]
    # PTI's motion term (on by default under --tune pti) tunes on the driving video's own offsets (its
    # first frames, every third): a generator of its own in the cache
    moved = tmp_path / "moved.mp4"
    code, _, err = _cli(capsys, "animate", "--identity", _photo(shared), "--driving", video, "--generator", gen,
                        "--encoder", enc, "--frames", 12, "--landmarks", "none", "--tune-steps", 20, "--out", moved)
    assert code == 0, err
    moved_json = json.loads(moved.with_suffix(".json").read_text())
    pti = moved_json["pivotal_tuning"]
    assert moved_json["settings"]["tune_motion"] == 1.0, moved_json["settings"]
    assert pti["config"]["motion"] == 1.0 and pti["motion_offsets"] == 4 and not pti["cache_hit"], pti
    assert pti["cache"] != grid_tuning["cache"]
    plain = tmp_path / "plain.mp4"
    code, _, err = _cli(capsys, "animate", "--identity", _photo(shared), "--motion", motion, "--frames", 4,
                        "--landmarks", "none", "--tune", "none", "--out", plain)
    assert code == 0, err
    plain_json = json.loads(plain.with_suffix(".json").read_text())
    assert plain_json["pivotal_tuning"] is None and plain_json["settings"]["tune_motion"] == 0.0


def test_animate_bad_inputs_fail_with_one_line_and_no_mp4(chain, shared, tmp_path, capsys):
    from PIL import Image

    gen, enc, motion, _ = chain
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((128, 128, 3), 128, np.uint8)).save(grey)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not an image")
    other = tmp_path / "other_generator.pt"            # a loadable generator that is not the one trained against
    ckpt = torch.load(gen, weights_only=True)
    ckpt["meta"] = {**ckpt.get("meta", {}), "note": "another generator"}
    torch.save(ckpt, other)
    out = tmp_path / "bad.mp4"

    def fails(*extra, match):
        args = ["animate", "--motion", motion, "--out", out, "--frames", 4, *extra]
        code, _, err = _cli(capsys, *args)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and lines[0].startswith("svgen: error:"), err
        assert match in lines[0], lines[0]
        assert not out.exists() and not out.with_suffix(".npy").exists() and not out.with_suffix(".json").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bad")]   # no temp leftovers

    fails("--identity", grey, match="no face")
    fails("--identity", junk, match=str(junk))
    fails("--identity", tmp_path / "missing.jpg", match="does not exist")
    fails("--identity", _photo(shared), "--generator", other, match="another generator")
    fails("--identity", _photo(shared), "--frames", 0, match="--frames must be a positive")
    fails("--identity", _photo(shared), "--frames", -5, match="--frames must be a positive")
    fails("--identity", _photo(shared), "--offset-layers", "0-99", match="--offset-layers: W+ layers must lie")
    fails("--identity", _photo(shared), "--motion-layers", "0-99", match="--motion-layers: W+ layers must lie")
    fails("--identity", _photo(shared), "--tune", "none", "--tune-motion", 1, match="needs --tune pti")


@pytest.mark.parametrize("given", [(), ("--generator",), ("--encoder",)])
def test_animate_driving_without_motion_names_generator_and_encoder_up_front(shared, tmp_path, capsys, given):
    """--driving without --motion needs both models: one line naming both, before any work or output."""
    video = shared / "data" / "videos" / "dreamtalk_mead" / "M030_front_neutral_level1_001.mp4"
    out = tmp_path / "reenacted.mp4"
    extra = [a for flag in given for a in (flag, tmp_path / "missing.pt")]
    code, _, err = _cli(capsys, "animate", "--identity", _photo(shared), "--driving", video, *extra,
                        "--out", out)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("svgen: error:"), err
    assert "--generator" in lines[0] and "--encoder" in lines[0] and "checkpoint" not in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_animate_edit_shifts_rendered_latents_and_is_recorded(chain, shared, tmp_path, capsys):
    """--edit adds the direction to every animated frame (here a ramp) before rendering; the .json records it."""
    from svgen.editing.directions import GanspaceConfig, ganspace, save_directions
    from svgen.editing.edits import apply_edits, load_edits

    _, _, motion, G = chain
    dirs = save_directions(ganspace(G, GanspaceConfig(num_components=3, num_samples=2000)), tmp_path / "d.pt")
    outs = [tmp_path / "plain.mp4", tmp_path / "edit.mp4"]
    for out, extra in zip(outs, ((), ("--edit", f"{dirs}:1:2:ramp=0-3"))):
        code, _, err = _cli(capsys, "animate", "--identity", _photo(shared), "--motion", motion, "--frames", 4,
                            "--landmarks", "none", "--tune", "none", "--out", out, *extra)
        assert code == 0, err
    plain, edited = (np.load(o.with_suffix(".npy")) for o in outs)
    np.testing.assert_allclose(edited, apply_edits(plain, load_edits([f"{dirs}:1:2:ramp=0-3"], G.num_ws, G.w_dim)),
                               atol=1e-5)
    assert np.array_equal(edited[:, 0], plain[:, 0]) and not np.allclose(edited[:, 3], plain[:, 3])
    recorded = json.loads(outs[1].with_suffix(".json").read_text())
    assert [e["edit"] for e in recorded["edits"]] == [f"{dirs}:1:2:ramp=0-3"]
    assert recorded["settings"]["edits"][0]["index"] == 1


@pytest.mark.slow
def test_animate_paste_back_has_the_photo_size(chain, shared, tmp_path, capsys):
    """--paste-back composites the animated face into the unaligned photo: its size, its pixels away from the face."""
    from PIL import Image

    from svgen.preprocessing.video_io import iter_frames, probe

    _, _, motion, _ = chain
    photo = shared / "data" / "photos" / "deep3dfacerecon" / "000031.jpg"
    out = tmp_path / "pasted.mp4"
    code, _, err = _cli(capsys, "animate", "--identity", photo, "--motion", motion, "--frames", 3, "--tune", "none",
                        "--paste-back", "--out", out)
    assert code == 0, err
    src = np.asarray(Image.open(photo).convert("RGB")).astype(float)
    info = probe(out)
    assert (info.width, info.height, info.num_frames) == (src.shape[1], src.shape[0], 3)
    frame = next(iter(iter_frames(out))).astype(float)
    diff = np.abs(frame - src).mean(axis=2)
    assert diff[:, :20].mean() < 4 and diff.max() > 60          # border as in the photo, the face replaced
    code, _, err = _cli(capsys, "animate", "--identity", photo, "--motion", motion, "--frames", 3, "--grid", 2,
                        "--paste-back", "--out", tmp_path / "g.mp4")
    assert code == 1 and "--paste-back" in err


def test_mouth_inputs_use_the_store_only_where_its_mouth_follows_the_codes(chain, shared, monkeypatch):
    """``mouth_inputs`` on the chain's training store, with the renders' mouth aspect ratio replaced: one that
    follows a direction of the codes gives the term its four targets; noise (R^2 under ``MOUTH_MIN_R2``, as a
    driving video of another person gave the demo generator) turns the term off, saying why."""
    import svgen.pipeline.animate as anim
    from svgen.preprocessing.pipeline import align_photo

    _, _, motion, G = chain
    photo = align_photo(_photo(shared), size=64)
    from svgen.stage2_motion import load_motion

    model = load_motion(motion)
    st = anim.AnimateSettings(identity=str(_photo(shared)), out="unused.mp4", motion=str(motion))
    rng = np.random.default_rng(0)

    def follows(G_, codes, backend=None):     # MAR along the codes' leading component (on the moving layers)
        flat = codes[:, :2].reshape(len(codes), -1).astype(np.float64)
        flat -= flat.mean(0)
        z = flat @ np.linalg.svd(flat, full_matrices=False)[2][0]
        return 0.2 + 0.02 * z / z.std() + rng.normal(0, 0.002, len(codes))

    # the landmarks come from a 64 px copy of the photo (the chain's generator is 32 px): the term only needs
    # them to place the mouth, so the photo is passed at 64 px and the targets compared at that size
    monkeypatch.setattr(anim, "rendered_mar", follows)
    G64 = type("G64", (), {"img_resolution": 64, "mapping": G.mapping})()
    mouth, rec = anim.mouth_inputs(G64, model, None, photo, st, "", [0, 1])
    assert rec["used"] and rec["r2"] >= 0.9 and rec["codes"].endswith(".h5") and rec["mar_std"] > 0.015, rec
    offsets, targets = mouth
    assert offsets.shape == (4, G.num_ws, G.w_dim) and targets.shape == (4, 3, 64, 64)
    assert np.all(offsets[:, 2:].numpy() == 0)                          # only the layers that move
    monkeypatch.setattr(anim, "rendered_mar", lambda G_, codes, backend=None: rng.normal(0.2, 0.02, len(codes)))
    with pytest.warns(UserWarning, match="mouth term is off"):
        mouth, rec = anim.mouth_inputs(G64, model, None, photo, st, "", [0, 1])
    assert mouth is None and not rec["used"] and "R^2" in rec["reason"], rec


def test_driving_mouth_follows_the_driving_frames_landmarks(chain, shared, tmp_path, capsys, monkeypatch):
    """``--driving`` with ``--motion``: each frame's code moves along the generator's mouth direction (fitted
    on the motion's training store) by the driving frame's mouth aspect ratio, as the landmark-motion metric
    measures it on the aligned driving frames, less the clip's median, over the slope of the fit; ``--driving-mouth codes`` keeps the
    inverted codes; without a training store the codes are kept, saying why; ``landmarks`` needs a backend."""
    import svgen.pipeline.animate as anim
    from svgen.metrics.landmark_motion import dataset_features
    from svgen.preprocessing.videos import preprocess_videos
    from svgen.stage2_motion import load_motion

    gen, enc, motion, G = chain
    video = shared / "data" / "videos" / "dreamtalk_mead" / "M030_front_neutral_level1_001.mp4"

    def follows(G_, codes, backend=None):     # the chain's 32 px renders: MAR along the codes' leading component
        flat = codes.reshape(len(codes), -1).astype(np.float64)
        flat -= flat.mean(0)
        z = flat @ np.linalg.svd(flat, full_matrices=False)[2][0]
        return 0.2 + 0.02 * z / z.std() + np.random.default_rng(len(codes)).normal(0, 0.002, len(codes))

    monkeypatch.setattr(anim, "rendered_mar", follows)
    out = tmp_path / "lm.mp4"
    args = ("animate", "--identity", _photo(shared), "--driving", video, "--motion", motion, "--generator", gen,
            "--encoder", enc, "--frames", 12, "--tune", "none")
    code, _, err = _cli(capsys, *args, "--out", out)
    assert code == 0, err
    rec = json.loads(out.with_suffix(".json").read_text())["motion"][0]["mouth"]
    assert rec["from"] == "driving landmarks" and rec["frames_measured"] >= 0.9, rec
    # the reference: the driving clip aligned as animate aligns it, measured by the metric
    ref = tmp_path / "ref.zip"
    preprocess_videos([video], ref, size=G.img_resolution, landmarks="dlib", max_frames=12, show_progress=False)
    series = max(dataset_features(ref), key=len)
    mar = series.filled()[:12, 0]
    assert np.ptp(mar) > 0.1, mar                                      # the clip talks
    assert rec["mar_std"] == pytest.approx(float(mar.std()), abs=1e-4)
    model = load_motion(motion)
    st = anim.AnimateSettings(identity=str(_photo(shared)), out=str(out), motion=str(motion), tune="none")
    mouth, _ = anim.mouth_direction(G, model, None, st, "", None)
    d = mouth.direction.astype(np.float64)
    lat = np.load(out.with_suffix(".npy"))[0].astype(np.float64)
    coord = ((lat - lat[0]) * d).sum(axis=(1, 2))
    assert rec["mar_reference"] == pytest.approx(float(np.median(mar)), abs=1e-4)
    want = np.clip((mar - np.median(mar)) / mouth.mar_per_unit, -3 * mouth.spread, 3 * mouth.spread)
    np.testing.assert_allclose(coord, want - want[0], atol=1e-3 * mouth.spread)    # (frame 0 moves too)

    kept = tmp_path / "codes.mp4"
    code, _, err = _cli(capsys, *args, "--driving-mouth", "codes", "--out", kept)
    assert code == 0, err
    assert json.loads(kept.with_suffix(".json").read_text())["motion"][0]["mouth"] == {"from": "driving codes"}
    lat_codes = np.load(kept.with_suffix(".npy"))[0].astype(np.float64)
    assert np.abs(((lat_codes - lat_codes[0]) * d).sum(axis=(1, 2)) - (want - want[0])).max() > 0.1 * mouth.spread
    rest = lambda x: x - (x * d).sum(axis=(1, 2))[:, None, None] * d      # noqa: E731
    np.testing.assert_allclose(rest(lat), rest(lat_codes), atol=1e-4)          # only the mouth coordinate differs

    bare = tmp_path / "bare.mp4"
    code, _, err = _cli(capsys, "animate", "--identity", _photo(shared), "--driving", video, "--generator", gen,
                        "--encoder", enc, "--frames", 12, "--tune", "none", "--out", bare)
    assert code == 0, err
    assert "mouth comes from its codes" in err and "--motion" in err, err
    assert json.loads(bare.with_suffix(".json").read_text())["motion"][0]["mouth"] == {"from": "driving codes"}
    # more --frames than the driving video has: refused with the user's number, before any tuning or output
    # (PTI's motion term reads the first 150 frames, which had named --frames 150)
    long = tmp_path / "long.mp4"
    code, _, err = _cli(capsys, "animate", "--identity", _photo(shared), "--driving", video, "--generator", gen,
                        "--encoder", enc, "--frames", 100000, "--tune-steps", 1, "--out", long)
    assert code == 1 and "usable frames, fewer than --frames 100000" in err and not long.exists(), err
    code, _, err = _cli(capsys, *args, "--landmarks", "none", "--driving-mouth", "landmarks",
                        "--out", tmp_path / "no.mp4")
    assert code == 1 and "--landmarks none" in err and not (tmp_path / "no.mp4").exists(), err
