"""``svgen train-encoder --gpus 2`` on CPU: two gloo processes under torchrun train the same encoder as one
process with the same (total) --batch, and a two-process run resumes exactly."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from clitools import run_cli
from ddptools import assert_same_training, svgen_subprocess


def test_batch_that_does_not_split_is_refused_before_any_process_starts(capsys, random_generator_path,
                                                                        real_frames_zip32, tmp_path):
    code, _, err = run_cli(capsys, "train-encoder", "--generator", random_generator_path, "--data", real_frames_zip32,
                           "--out", tmp_path / "run", "--batch", "6", "--gpus", "2", "--device", "cpu")
    assert code == 1 and err.strip().splitlines() == [
        "svgen: error: batch 6 (3 generated + 3 real images) does not split evenly over 2 processes"]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_two_processes_train_the_one_process_encoder_and_resume(random_generator_path, real_frames_zip32, tmp_path):
    base = ["train-encoder", "--generator", random_generator_path, "--data", real_frames_zip32, "--space", "w+",
            "--batch", "16", "--device", "cpu"]                    # 8 generated + 8 real, 4 + 4 per process
    svgen_subprocess(*base, "--out", tmp_path / "one", "--steps", "3")
    two = svgen_subprocess(*base, "--out", tmp_path / "two", "--steps", "3", "--gpus", "2")
    assert two.stdout.count("wrote") == 1                        # process 0 alone reports (and writes)
    one_ck = torch.load(tmp_path / "one" / "encoder.pt", weights_only=True)
    two_ck = torch.load(tmp_path / "two" / "encoder.pt", weights_only=True)
    assert two_ck["meta"]["world_size"] == 2 and two_ck["meta"]["steps"] == 3
    for key in ("E", "E_ema"):                                   # BatchNorm running statistics included
        assert_same_training(one_ck[key], two_ck[key])
    # the logged losses are the means over all processes, written once
    logs = [[json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
            for run in ("one", "two")]
    assert len(logs[0]) == len(logs[1]) == 1
    assert logs[1][0]["loss"] == pytest.approx(logs[0][0]["loss"], rel=1e-4)

    # 2 steps, then --resume to 3 in two processes == the uninterrupted two-process run
    svgen_subprocess(*base, "--out", tmp_path / "resumed", "--steps", "2", "--gpus", "2")
    shutil.copytree(tmp_path / "resumed", tmp_path / "alone")
    svgen_subprocess(*base, "--out", tmp_path / "resumed", "--steps", "3", "--gpus", "2", "--resume")
    resumed = torch.load(tmp_path / "resumed" / "encoder.pt", weights_only=True)
    for key in ("E", "E_ema"):
        for name, t in two_ck[key].items():
            torch.testing.assert_close(resumed[key][name], t, rtol=0, atol=0, msg=f"{key}.{name}")
    # the checkpoint holds no process count: one process resumes it to the one-process result
    svgen_subprocess(*base, "--out", tmp_path / "alone", "--steps", "3", "--resume")
    alone = torch.load(tmp_path / "alone" / "encoder.pt", weights_only=True)
    for key in ("E", "E_ema"):
        assert_same_training(one_ck[key], alone[key])
