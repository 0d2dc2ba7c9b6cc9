"""Checkpoints written before the trainers moved onto ``svgen.training`` / ``svgen.nn`` still load and
give the same outputs (files and outputs made by ``tests/data/legacy/make_legacy.py`` at commit 3a1622c).

Same to float rounding, not bit for bit: another CPU picks other conv and matmul kernels, so bit-equality
only holds on the machine that wrote the files; a wrong load is off by orders of magnitude more."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from svgen.inversion.encoders import load_encoder
from svgen.stage1_image_gan.checkpoints import load_generator
from svgen.stage2_motion import load_motion

def same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


LEGACY = Path(__file__).resolve().parents[1] / "data" / "legacy"


@pytest.fixture(scope="module")
def expected() -> dict:
    return torch.load(LEGACY / "expected.pt", weights_only=True)


@pytest.fixture(scope="module")
def generator():
    return load_generator(LEGACY / "generator.pt")


def test_generator_renders_as_before(generator, expected: dict) -> None:
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ws = generator.mapping(z, None, truncation_psi=0.7)
        img = generator.synthesis(ws, noise_mode="const")
    same(ws, expected["generator_ws"])
    same(img, expected["generator_img"])


def test_encoder_inverts_as_before(expected: dict) -> None:
    with torch.no_grad():
        ws = load_encoder(LEGACY / "encoder.pt")(expected["generator_img"])
    same(ws, expected["encoder_ws"])


def test_gru_motion_samples_as_before(expected: dict) -> None:
    same(load_motion(LEGACY / "motion_gru.pt").sample(2, 7, seed=5), expected["gru_sample"])


def test_styleinv_motion_samples_as_before(generator, expected: dict) -> None:
    m = load_motion(LEGACY / "motion_styleinv.pt")
    m.attach_generator(generator)
    w = m.sample_w(2, 7, seed=5, w0=expected["generator_ws"][:2, 0])
    same(w, expected["styleinv_sample"])
