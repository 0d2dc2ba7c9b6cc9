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
def latents(random_generator_path: Path, tmp_path_factory) -> Path:
    """W codes that move: per clip a slow random walk of z through the random generator's mapping (2 clips
    x 60 frames). The frames must differ: on near-constant codes (a W encoder trained for 3 steps on this
    generator gave codes whose spread over frames was 2e-5 of their norm) batch statistics are rounding
    noise, and one and two processes parted by 4e-4 at the 99th percentile after 3 steps on one draw."""
    from svgen.inversion.latent_store import LatentStoreWriter
    from svgen.stage1_image_gan.checkpoints import load_generator
    from svgen.utils.io import file_sha256

    G = load_generator(random_generator_path).eval()
    path = tmp_path_factory.mktemp("styleinv_ddp") / "latents.h5"
    writer = LatentStoreWriter(path, space="w", num_ws=G.num_ws, w_dim=G.w_dim,
                               generator_sha256=file_sha256(random_generator_path), resolution=G.img_resolution)
    rng = torch.Generator().manual_seed(0)
    for c in range(2):
        steps = torch.randn(60, G.z_dim, generator=rng) * 0.15
        z = torch.randn(1, G.z_dim, generator=rng) + steps.cumsum(0)             # [60, z_dim]
        with torch.no_grad():
            w = G.mapping(z)[:, 0]                                                # [60, w_dim]
        writer.create_clip(f"clip{c}", 60, fps=25.0)
        writer.write(f"clip{c}", 0, w.numpy())
    writer.finalize()
    return path


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
    # Three Adam steps at lr 5e-4 from a random SI: its first steps move each weight by about +-lr whatever
    # the size of its gradient, so the weights whose gradient is mostly rounding (e.g. BatchNorm biases that
    # a later BatchNorm removes) part by up to 2 lr. Measured on these codes, one vs two processes:
    # median / 99 % / 99.9 % of |difference| 6e-6 / 1.3e-4 / 3.3e-4 (SI), 2e-6 / 1e-4 / 5e-4 (D); with
    # BatchNorm over each process's half only: 3.4e-4 / 2.5e-3 / 3.4e-3 and 4e-4 / 5.9e-3 / 8.9e-3.
    lr = 5e-4
    for key in ("SI", "ema", "D"):
        assert_same_training(one_ck[key], two_ck[key], q50=lr / 20, q99=lr / 2, q999=2 * lr)
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
