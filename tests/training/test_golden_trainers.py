"""The four trainers give the numbers they gave before they moved onto ``svgen.training``.

``golden_trainers.json`` was written by ``golden_runs.py`` at commit 3a1622c (the trainers as they
were: stage 1's loop function, ``EncoderTrainer``, ``GRUTrainer``, ``StyleInVTrainer``). Each run is a
few seeded steps at a tiny size; the fingerprints are float64 sums and sums of squares of every
network, EMA copy and optimizer state, and every logged loss. The refactor keeps the arithmetic order,
so the comparison is exact.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from golden_runs import run_all  # pytest puts this folder on sys.path (no __init__.py)

GOLDEN = json.loads((Path(__file__).with_name("golden_trainers.json")).read_text())


@pytest.fixture(scope="module")
def results(real_frames_zip32: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    old = torch.get_num_threads()
    torch.set_num_threads(1)     # the golden values were made on one thread (reduction order)
    try:
        return run_all(tmp_path_factory.mktemp("golden"), real_frames_zip32)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("trainer", sorted(GOLDEN))
def test_trainer_matches_the_recorded_run(results: dict, trainer: str) -> None:
    got, want = results[trainer], GOLDEN[trainer]
    assert sorted(got) == sorted(want)
    for key in want:
        if key == "log":
            assert len(got["log"]) == len(want["log"])
            for i, (g, w) in enumerate(zip(got["log"], want["log"])):
                assert g == w, f"{trainer} log record {i}"
        else:
            assert got[key] == want[key], f"{trainer} {key}: {got[key]} != {want[key]}"
