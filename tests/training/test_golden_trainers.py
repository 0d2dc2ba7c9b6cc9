"""The four trainers give the numbers they gave before they moved onto ``svgen.training``.

``golden_trainers.json`` holds what ``golden_runs.py`` printed for the trainers as they were (stage 1's
loop function, ``EncoderTrainer``, ``GRUTrainer``, ``StyleInVTrainer``; the code at 0b3cdd2 = 3a1622c).
Each run is a few seeded steps at a tiny size; the fingerprints are float64 sums and sums of squares
of every network, EMA copy and optimizer state, and every logged loss. The runs execute in a child
process that pins a reference arithmetic (``tests/reference_arithmetic.py``: one thread, ATen's baseline
kernels, MKL's ``COMPATIBLE`` mode, no oneDNN or NNPACK), so the bits do not depend on which x86-64
CPU runs the test; with the CPU's own kernels a CI machine drifted 1e-6 to 1e-2 relative. The refactor
keeps the arithmetic order, so the comparison is exact, with one exception (``TOLERANCE``): the EMA
copies of the GRU and StyleInV. Every trainer now updates its EMA with StyleGAN2-ADA's
``p_ema = lerp(p, p_ema, beta)`` where these two wrote ``p_ema.lerp_(p, 1 - beta)``: the same average
with ``1 - beta`` rounded differently (float32 vs float64): 3e-9 (GRU) and 5e-11 (StyleInV) relative
in the fingerprint (measured in the reference arithmetic), compared at 1e-8. The EMA copy never feeds
training, so everything else is exact. (In the reference arithmetic ``svgen.nn.EqualLinear``'s bias
after the product rounds as StyleInV's old ``addmm`` did, so ``styleinv_latent`` is exact too.)

Exact, that is, on the CPUs the references were checked on. On a newer one (2026-12-06: AVX-512 FP16 and
AMX) the pinned runs drifted from the references by up to 1.7e-4 relative in stage 1 (its path-length loss
after six steps) and 1e-6 to 9e-6 in the others, the same bits on every rerun. Capping the instruction
sets of MKL, oneDNN, glibc's libm, numpy and its OpenBLAS changed no bit of it, nor did other Pillow,
numpy or imageio-ffmpeg versions; the test clips' decoded frames do depend on ffmpeg's CPU flags, but the
GRU and latent StyleInV runs, which read no frames, drift too, so the cause was not found. ``DRIFT``
allows about three times what that machine showed, per trainer (integers stay exact): a trainer whose
arithmetic or logic changed moves its fingerprints further than that.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reference_arithmetic import CANNOT_PIN  # pytest puts tests/ on sys.path (no __init__.py)

GOLDEN = json.loads((Path(__file__).with_name("golden_trainers.json")).read_text())
# trainer -> {fingerprint key or "*": relative/absolute tolerance}; see the module docstring
TOLERANCE = {"gru": {"ema": 1e-8}, "styleinv_image": {"ema": 1e-8}, "styleinv_latent": {"ema": 1e-8}}
# trainer -> relative drift allowed for every float on CPUs other than the references' (module docstring)
DRIFT = {"stage1": 5e-4, "encoder": 5e-6, "gru": 5e-6, "styleinv_image": 2e-5, "styleinv_latent": 3e-5}


def _same(got, want, tol: float, drift: float = 0.0) -> bool:
    if isinstance(want, list):
        return len(got) == len(want) and all(_same(g, w, tol, drift) for g, w in zip(got, want))
    if not isinstance(want, float):                       # counts, flags, strings: exact
        return got == want
    return got == want or math.isclose(got, want, rel_tol=max(tol, drift), abs_tol=tol)


@pytest.fixture(scope="module")
def results(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The golden runs of the current code, in a child process that pins the reference arithmetic."""
    out = tmp_path_factory.mktemp("golden") / "fingerprints.json"
    script = Path(__file__).with_name("golden_runs.py")
    env = {**os.environ, "SVGEN_SHARED": str(shared)}
    proc = subprocess.run([sys.executable, str(script), str(out)], env=env, capture_output=True, text=True,
                          timeout=900)
    if proc.returncode == CANNOT_PIN:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("trainer", sorted(GOLDEN))
def test_trainer_matches_the_recorded_run(results: dict, trainer: str) -> None:
    got, want = results[trainer], GOLDEN[trainer]
    tols, drift = TOLERANCE.get(trainer, {}), DRIFT.get(trainer, 0.0)
    assert sorted(got) == sorted(want)
    for key in want:
        tol = tols.get(key, tols.get("*", 0.0))
        if key == "log":
            assert len(got["log"]) == len(want["log"])
            for i, (g, w) in enumerate(zip(got["log"], want["log"])):
                assert sorted(g) == sorted(w), f"{trainer} log record {i}"
                for f in w:
                    assert _same(g[f], w[f], tol, drift), f"{trainer} log record {i} {f}: {g[f]} != {w[f]}"
        else:
            assert _same(got[key], want[key], tol, drift), f"{trainer} {key}: {got[key]} != {want[key]}"
