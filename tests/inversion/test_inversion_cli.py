"""``svgen train-encoder`` / ``invert`` / ``reconstruct`` from the command line: artifacts, resume
(also after a SIGKILL), refusals and one-line errors."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from svgen.cli.main import main
from svgen.inversion.latent_store import LatentStore, partial_path
from svgen.utils.rundir import load_checkpoint

from clitools import run_cli


@pytest.fixture(scope="module")
def encoder_run(tiny_generator_path, short_zip24, tmp_path_factory):
    """A W+ encoder trained for 6 steps from the CLI (quality is not the point here)."""
    out = tmp_path_factory.mktemp("encrun") / "encoder"
    main(["train-encoder", "--generator", str(tiny_generator_path), "--data", str(short_zip24),
          "--space", "w+", "--out", str(out), "--steps", "6", "--batch", "4"])
    return out


def test_train_encoder_cli_writes_run_and_resume_matches(capsys, encoder_run, tiny_generator_path,
                                                          short_zip24, tmp_path):
    enc = load_checkpoint(encoder_run / "encoder.pt", expect_format="svgen-encoder")
    assert enc["meta"]["steps"] == 6 and "optimizer" not in enc and enc["config"]["space"] == "w+"
    assert (encoder_run / "checkpoints" / "latest.pt").is_file()
    assert (encoder_run / "config.json").is_file() and list((encoder_run / "samples").glob("*.png"))
    assert (encoder_run / "log.jsonl").read_text().strip()
    # 3 steps, then --resume to 6 steps == the uninterrupted 6-step run
    out = tmp_path / "enc"
    base = ["train-encoder", "--generator", tiny_generator_path, "--data", short_zip24, "--space", "w+",
            "--out", out, "--batch", "4"]
    assert run_cli(capsys, *base, "--steps", "3", "--snapshot-every", "2")[0] == 0
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == ["recon-0000002.png", "recon-0000003.png"]
    # a run saved before the cadences were renamed (checkpoint_every = latest.pt, snapshot_every = numbered)
    latest = out / "checkpoints" / "latest.pt"
    ck = torch.load(latest, weights_only=True)
    for key in ("snapshot_every", "keep_every"):
        del ck["train_config"][key]
    ck["train_config"].update(checkpoint_every=1, snapshot_every=2)
    torch.save(ck, latest)
    code, stdout, _ = run_cli(capsys, *base, "--steps", "6", "--resume")
    assert code == 0 and "encoder.pt" in stdout
    assert sorted(p.name for p in (out / "samples").glob("recon-000000[4-6].png")) == [
        "recon-0000004.png", "recon-0000005.png", "recon-0000006.png"]          # every step, as saved
    assert sorted(p.name for p in (out / "checkpoints").glob("encoder-*.pt")) == [
        "encoder-0000004.pt", "encoder-0000006.pt"]                               # numbered every 2 steps
    resumed = load_checkpoint(out / "encoder.pt")
    for key in ("E", "E_ema"):
        for name, t in enc[key].items():
            assert torch.equal(t, resumed[key][name]), (key, name)


def test_invert_killed_and_resumed_equals_uninterrupted(capsys, encoder_run, tiny_generator_path,
                                                        short_zip24, tmp_path):
    encoder = encoder_run / "encoder.pt"
    args = ["invert", "--generator", tiny_generator_path, "--encoder", encoder, "--data", short_zip24,
            "--batch", "4", "--refine-steps", "3", "--temporal-weight", "1.0"]
    full = tmp_path / "full.h5"
    assert run_cli(capsys, *args, "--out", full)[0] == 0

    out = tmp_path / "killed.h5"
    env = dict(os.environ, SVGEN_NO_PROGRESS="1")
    proc = subprocess.Popen([sys.executable, "-m", "svgen.cli.main", *map(str, args), "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    part = partial_path(out)
    done = 0
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
            if not part.exists():
                continue
            try:
                with h5py.File(part, "r", locking=False) as f:
                    done = sum(int(g.attrs["frames_done"]) for g in f["clips"].values())
            except Exception:  # caught mid-write; look again
                continue
            if done >= 8:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert 8 <= done < 48, f"could not stop the run mid-way (done={done})"
    assert not out.exists() and part.exists()
    assert run_cli(capsys, *args, "--out", out, "--resume")[0] == 0
    assert not part.exists()
    with LatentStore(full) as a, LatentStore(out) as b:
        assert a.clips == b.clips
        for clip in a.clips:
            assert np.array_equal(a.read(clip), b.read(clip)), clip


def test_reconstruct_writes_side_by_side_video(capsys, encoder_run, tiny_generator_path, short_zip24,
                                               tmp_path):
    from svgen.preprocessing.video_io import probe

    lat = tmp_path / "latents.h5"
    code, _, err = run_cli(capsys, "invert", "--generator", tiny_generator_path, "--encoder",
                           encoder_run / "encoder.pt", "--data", short_zip24, "--out", lat)
    assert code == 0, err
    with LatentStore(lat) as store:
        clip = store.clips[1]
    video = tmp_path / "recon.mp4"
    code, _, err = run_cli(capsys, "reconstruct", "--latents", lat, "--clip", clip, "--out", video)
    assert code == 0, err
    info = probe(video)
    assert (info.width, info.height, info.num_frames) == (64, 32, 24)
    code, _, err = run_cli(capsys, "reconstruct", "--latents", lat, "--clip", "nope", "--out", video)
    assert code == 1 and "no clip named 'nope'" in err


def test_cli_errors_are_one_line(capsys, encoder_run, tiny_generator_path, random_generator_path,
                                 short_zip24, tmp_path):
    encoder = encoder_run / "encoder.pt"

    def fails(*args, match: str) -> None:
        code, _, err = run_cli(capsys, *args)
        assert code == 1, err
        assert err.startswith("svgen: error: ") and err.count("\n") == 1 and match in err, err

    fails("invert", "--generator", random_generator_path, "--encoder", encoder, "--data", short_zip24,
          "--out", tmp_path / "x.h5", match="encoder was trained against another generator")
    fails("invert", "--generator", tiny_generator_path, "--encoder", tmp_path / "none.pt",
          "--data", short_zip24, "--out", tmp_path / "x.h5", match="none.pt")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    fails("invert", "--generator", tiny_generator_path, "--encoder", encoder, "--data", short_zip24,
          "--out", blocker / "x.h5", match="output folder")
    fails("train-encoder", "--generator", tiny_generator_path, "--data", short_zip24, "--out",
          tmp_path / "e", "--steps", "1", "--lpips-weights", tmp_path / "lpips_alex.pth",
          match="LPIPS weights not found")
    fails("train-encoder", "--generator", tiny_generator_path, "--data", short_zip24, "--out",
          tmp_path / "e2", "--resume", match="no checkpoint exists")
    assert not (tmp_path / "x.h5").exists() and not partial_path(tmp_path / "x.h5").exists()
    code, _, err = run_cli(capsys, "train-encoder", "--generator", tiny_generator_path, "--data",
                           short_zip24, "--out", tmp_path / "e3", "--steps", "0")
    assert code == 2 and "positive" in err
    # a latent store made with one generator is refused by another
    lat = tmp_path / "lat.h5"
    assert run_cli(capsys, "invert", "--generator", tiny_generator_path, "--encoder", encoder,
                   "--data", short_zip24, "--out", lat)[0] == 0
    fails("reconstruct", "--latents", lat, "--generator", random_generator_path, "--out",
          tmp_path / "r.mp4", match="latents were made with another generator")
    Path(tmp_path / "trunc.h5").write_bytes(lat.read_bytes()[:3000])
    fails("reconstruct", "--latents", tmp_path / "trunc.h5", "--out", tmp_path / "r.mp4",
          match="truncated or corrupt")
    assert not (tmp_path / "r.mp4").exists()
