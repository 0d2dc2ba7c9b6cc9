"""``svgen train-motion --model styleinv --gpus 2`` on CPU: two gloo processes under torchrun train the
StyleInV of one process with the same (total) --batch and resume exactly; the GRU refuses --gpus."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clitools import run_cli
from ddptools import assert_same_training, svgen_subprocess


@pytest.fixture(scope="module")
def latents(random_generator_path: Path, real_frames_zip32: Path, tmp_path_factory) -> Path:
    """W latents of the real 32 px frames, inverted with a W encoder trained for 3 steps (quality is not the
    point: the test compares two ways of training on the same data)."""
    from svgen.inversion.api import invert_dataset
    from svgen.inversion.encoders import load_encoder
    from svgen.inversion.train import train_encoder
    from svgen.stage1_image_gan.checkpoints import load_generator
    from svgen.utils.io import file_sha256

    root = tmp_path_factory.mktemp("styleinv_ddp")
    enc = train_encoder(random_generator_path, root / "encoder", real_frames_zip32, space="w", steps=3, batch=8,
                        id_loss="none", overrides={"lpips": 0.0}, device="cpu", show_progress=False)
    return invert_dataset(load_generator(random_generator_path), load_encoder(enc), real_frames_zip32,
                          root / "latents.h5", generator_sha256=file_sha256(random_generator_path),
                          encoder_sha256=file_sha256(enc), show_progress=False)


@pytest.mark.slow
def test_two_processes_train_the_one_process_styleinv_and_resume(latents, random_generator_path, tmp_path):
    # no --encoder: SI's IR-SE encoder starts at random with BatchNorm in training mode (global statistics);
    # batch 8 = two minibatch-std groups of 4 in D, one per process
    base = ["train-motion", "--model", "styleinv", "--latents", latents, "--generator", random_generator_path,
            "--batch", "8", "--lr", "5e-4", "--device", "cpu"]
    svgen_subprocess(*base, "--out", tmp_path / "one", "--steps", "3")
    assert json.loads((tmp_path / "one" / "config.json").read_text())["train"]["lr_si"] == 5e-4
    two = svgen_subprocess(*base, "--out", tmp_path / "two", "--steps", "3", "--gpus", "2")
    assert two.stdout.count("wrote") == 1
    one_ck = torch.load(tmp_path / "one" / "motion.pt", weights_only=True)
    two_ck = torch.load(tmp_path / "two" / "motion.pt", weights_only=True)
    for key in ("SI", "ema", "D"):
        assert_same_training(one_ck[key], two_ck[key])
    metrics = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 3]                  # process 0 alone evaluates

    # 2 steps, then --resume to 3 in two processes == the uninterrupted two-process run
    svgen_subprocess(*base, "--out", tmp_path / "resumed", "--steps", "2", "--gpus", "2")
    svgen_subprocess(*base, "--out", tmp_path / "resumed", "--steps", "3", "--gpus", "2", "--resume")
    resumed = torch.load(tmp_path / "resumed" / "motion.pt", weights_only=True)
    for key in ("SI", "ema", "D"):
        for name, t in two_ck[key].items():
            torch.testing.assert_close(resumed[key][name], t, rtol=0, atol=0, msg=f"{key}.{name}")


def test_batch_that_does_not_split_is_refused_before_any_process_starts(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train-motion", "--model", "styleinv", "--latents", tmp_path / "latents.h5",
                           "--out", tmp_path / "run", "--batch", "4", "--gpus", "2", "--device", "cpu")
    assert code == 1 and err.strip().splitlines() == [
        "svgen: error: batch 4 over 2 processes gives 2 per process, not a multiple of the minibatch-std group 4"]
    assert not (tmp_path / "run").exists()


def test_gru_refuses_gpus(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train-motion", "--model", "gru", "--latents", tmp_path / "latents.h5",
                           "--out", tmp_path / "run", "--gpus", "2", "--device", "cpu")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1
    assert "--gpus 2: the GRU trains in one process" in lines[0] and "--model styleinv" in lines[0]
    assert not (tmp_path / "run").exists()
