"""The four trainers give the numbers they gave before they moved onto ``svgen.training``.

``golden_trainers.json`` was written by ``golden_runs.py`` at commit 3a1622c (the trainers as they
were: stage 1's loop function, ``EncoderTrainer``, ``GRUTrainer``, ``StyleInVTrainer``). Each run is a
few seeded steps at a tiny size; the fingerprints are float64 sums and sums of squares of every
network, EMA copy and optimizer state, and every logged loss. The refactor keeps the arithmetic order,
so the comparison is exact, with two exceptions (``TOLERANCE``):

- the EMA copies of the GRU and StyleInV: every trainer now updates its EMA with StyleGAN2-ADA's
  ``p_ema = lerp(p, p_ema, beta)`` where these two wrote ``p_ema.lerp_(p, 1 - beta)``: the same
  average with ``1 - beta`` rounded differently (float32 vs float64): 1e-16 (GRU) and 7e-11 (StyleInV)
  relative in the fingerprint (measured), compared at 1e-9. The EMA copy never feeds training, so everything else stays exact;
- ``styleinv_latent``: the latent clip discriminator's lrelu layers are now ``svgen.nn.EqualLinear``,
  which adds the bias after the matrix product (``bias_act``, as StyleGAN2's FullyConnectedLayer does)
  where StyleInV's own copy added it inside ``addmm``. Same maths, different last-bit rounding of 2-D
  inputs; after 3 steps the fingerprints differ by <= 4e-6 relative and the logged losses by <= 2e-6
  absolute (measured), so that run is compared at 1e-5.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from golden_runs import run_all  # pytest puts this folder on sys.path (no __init__.py)

GOLDEN = json.loads((Path(__file__).with_name("golden_trainers.json")).read_text())
# trainer -> {fingerprint key or "*": relative/absolute tolerance}; see the module docstring
TOLERANCE = {"gru": {"ema": 1e-9}, "styleinv_image": {"ema": 1e-9}, "styleinv_latent": {"*": 1e-5}}


def _same(got, want, tol: float) -> bool:
    if tol == 0 or not isinstance(want, (int, float, list)) or isinstance(want, bool):
        return got == want
    if isinstance(want, list):
        return len(got) == len(want) and all(_same(g, w, tol) for g, w in zip(got, want))
    return math.isclose(got, want, rel_tol=tol, abs_tol=tol)


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
    tols = TOLERANCE.get(trainer, {})
    assert sorted(got) == sorted(want)
    for key in want:
        tol = tols.get(key, tols.get("*", 0.0))
        if key == "log":
            assert len(got["log"]) == len(want["log"])
            for i, (g, w) in enumerate(zip(got["log"], want["log"])):
                assert sorted(g) == sorted(w), f"{trainer} log record {i}"
                for f in w:
                    assert _same(g[f], w[f], tol), f"{trainer} log record {i} {f}: {g[f]} != {w[f]}"
        else:
            assert _same(got[key], want[key], tol), f"{trainer} {key}: {got[key]} != {want[key]}"
