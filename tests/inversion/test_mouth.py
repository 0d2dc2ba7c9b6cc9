"""PTI's mouth term (svgen.inversion.mouth): real photos' mouths opened by a measured amount, the motion's
mouth direction recovered from codes and mouth aspect ratios, and a tuned generator that renders the
opened mouth along that direction (and, without the term, does not)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from svgen.inversion.mouth import (MOUTH_STEPS, MouthDirection, fit_mouth_direction, inner_gap, mouth_steps,
                                   mouth_targets, open_mouth, photo_landmarks, retarget_mouth)
from svgen.inversion.pti import PTIConfig, pivotal_tuning
from svgen.utils.errors import SvgenError

PHOTOS = ("pitt.jpg", "johansson.jpg", "jackson.jpg", "stone.jpg")   # hyperstyle_aligned (FFHQ-aligned)


def _photo(shared, name: str, size: int) -> np.ndarray:
    img = Image.open(shared / "data" / "photos" / "hyperstyle_aligned" / name).convert("RGB")
    return np.array(img.resize((size, size), Image.LANCZOS))


def _tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 127.5 - 1


def _u8(x: torch.Tensor) -> np.ndarray:
    return ((x[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def backend():
    from svgen.preprocessing.landmarks import DlibLandmarks

    return DlibLandmarks()


@pytest.mark.parametrize("name", PHOTOS)
def test_open_mouth_opens_a_real_photos_mouth_by_the_asked_amount(shared, backend, name):
    """dlib's mouth aspect ratio of the opened photo grows with the opening, by about opening / inner mouth
    width; a negative opening closes the lips; nothing above the lips or beside the jaw changes."""
    from svgen.metrics.landmark_motion import landmark_features, track_landmarks

    arr = _photo(shared, name, 64)
    lm = photo_landmarks(arr, backend)
    assert lm is not None
    x = _tensor(arr)
    width = float(np.linalg.norm(lm[64] - lm[60]))
    mar = {}
    for px in (-2.0, 0.0, 1.0, 2.0, 3.0):
        out = open_mouth(x, lm, px)
        mar[px] = float(landmark_features(track_landmarks(_u8(out)[None], backend))[0, 0])
        top = int(np.floor(lm[60:68, 1].mean())) - 1               # rows above the lips' line
        assert torch.equal(out[..., :top, :], x[..., :top, :].clamp(-1, 1)), px
        left = int(np.floor(lm[48, 0] - 0.4 * (lm[54, 0] - lm[48, 0]))) - 1
        assert torch.equal(out[..., :left], x[..., :left].clamp(-1, 1)), px
    print(name, "inner gap", inner_gap(lm), "MAR", mar)
    # measured on these four photos: +3 px raises the ratio by 0.73-0.97x of 3 / width, monotonically
    assert mar[0.0] < mar[1.0] < mar[2.0] < mar[3.0], mar
    assert 0.4 * 3 / width <= mar[3.0] - mar[0.0] <= 1.5 * 3 / width, (mar, width)
    assert mar[-2.0] <= mar[0.0] + 0.01, mar


def test_fit_mouth_direction_recovers_a_planted_direction():
    """Codes whose mouth aspect ratio is linear along one direction (plus noise, a few faces missing):
    the fit finds it (kept to the moving layers), with its spread, R^2 and the MAR's std."""
    rng = np.random.default_rng(0)
    n, num_ws, w_dim = 300, 6, 16
    basis = rng.normal(size=(5, num_ws, w_dim))                       # a low-rank motion, like a motion model's
    coords = rng.normal(size=(n, 5)) * np.array([3.0, 2.0, 1.5, 1.0, 0.5])
    codes = np.einsum("nk,kld->nld", coords, basis) + 4.0
    true = basis[1].copy()
    true[4:] = 0.0                                                     # the mouth lives on layers 0-3
    true /= np.linalg.norm(true)
    mar = 0.2 + 0.02 * np.einsum("nld,ld->n", codes - codes.mean(0), true) + rng.normal(0, 0.1, n)
    mar[::25] = np.nan                                                 # frames without a face
    fit = fit_mouth_direction(codes, mar, layers=[0, 1, 2, 3])
    cos = float(np.sum(fit.direction * true))
    print("cos", cos, fit.summary())
    assert cos >= 0.95 and np.all(fit.direction[4:] == 0) and np.linalg.norm(fit.direction) == pytest.approx(1.0)
    ok = np.isfinite(mar)
    flat = (codes[ok] - codes[ok].mean(0)).reshape(int(ok.sum()), -1)
    assert fit.spread == pytest.approx(float((flat @ fit.direction.reshape(-1)).std()), rel=1e-4)
    assert fit.mar_std == pytest.approx(float(np.nanstd(mar)), rel=1e-6)
    assert fit.r2 >= 0.8 and fit.frames == int(ok.sum())
    assert fit.mar_per_unit == pytest.approx(0.02, rel=0.1), fit.mar_per_unit       # the planted slope
    with pytest.raises(SvgenError, match="at least 8"):
        fit_mouth_direction(codes[:20], np.where(np.arange(20) < 5, 0.2, np.nan))


def test_retarget_mouth_puts_the_driving_mar_on_the_mouth_direction_and_nothing_else():
    """Each code's coordinate along the mouth direction (from the first code) becomes (MAR - the reference MAR)
    / MAR per unit, clipped to the limit in spreads; the part orthogonal to the direction is the driving
    code's own; chunks of the trajectory give the codes of the whole."""
    rng = np.random.default_rng(1)
    n, num_ws, w_dim = 40, 4, 8
    d = rng.normal(size=(num_ws, w_dim))
    d[2:] = 0.0
    d /= np.linalg.norm(d)
    mouth = MouthDirection(direction=d.astype(np.float32), spread=2.0, mar_std=0.05, r2=0.9, frames=100,
                           mar_per_unit=0.02)
    traj = rng.normal(size=(n, num_ws, w_dim)).astype(np.float32)
    mar = 0.3 + 0.05 * np.sin(np.arange(n) / 3.0)
    mar[7] = 0.3 + 0.2                        # 10 spreads open: clipped to the 3-spread limit
    out, clipped = retarget_mouth(traj, traj[0], mar, 0.31, mouth, limit=3.0)
    coord = ((out.astype(np.float64) - traj[0]) * d).sum(axis=(1, 2))
    want = np.clip((mar - 0.31) / 0.02, -6.0, 6.0)
    np.testing.assert_allclose(coord, want, atol=1e-4)
    assert clipped == 1 and coord[7] == pytest.approx(6.0, abs=1e-4)
    rest = lambda x: x - ((x * d).sum(axis=(1, 2)))[:, None, None] * d          # noqa: E731
    np.testing.assert_allclose(rest(out.astype(np.float64)), rest(traj.astype(np.float64)), atol=1e-5)
    parts = [retarget_mouth(traj[a:a + 16], traj[0], mar[a:a + 16], 0.31, mouth)[0] for a in range(0, n, 16)]
    np.testing.assert_array_equal(np.concatenate(parts), out)
    closed = MouthDirection(direction=d.astype(np.float32), spread=2.0, mar_std=0.05, r2=0.9, frames=100,
                            mar_per_unit=-0.01)
    with pytest.raises(SvgenError, match="does not open the mouth"):
        retarget_mouth(traj, traj[0], mar, 0.31, closed)


@pytest.fixture(scope="module")
def G(tiny_generator_path):
    from svgen.stage1_image_gan.checkpoints import load_generator

    return load_generator(tiny_generator_path).eval()


def test_mouth_term_makes_the_tuned_generator_open_the_photos_mouth(G, shared, backend):
    """With ``PTIConfig.mouth`` the tuned generator renders the photo's opened (and closed) mouth at the
    offsets along the direction, and still the photo at the pivot; without it, it draws the photo's own
    mouth there. The mouth region's own error (``mouth_focus``, on by default) makes it follow the asked
    opening more closely. The 32 px generator of the fixtures was trained on two other people."""
    size = G.img_resolution
    big = _photo(shared, PHOTOS[0], 64)                               # landmarks at 64 px, targets at G's size
    lm = photo_landmarks(big, backend)
    rng = np.random.default_rng(1)
    direction = rng.normal(size=(G.num_ws, G.w_dim)).astype(np.float32)
    direction /= np.linalg.norm(direction)
    mouth = MouthDirection(direction=direction, spread=4.0, mar_std=0.05, r2=1.0, frames=100)
    offsets, targets64, openings = mouth_targets(_tensor(big), lm, mouth)
    assert len(offsets) == len(targets64) == 4 and openings[-1] == pytest.approx(1.5 * 3.0 * 0.05 *
                                                                                float(np.linalg.norm(lm[64] - lm[60])))
    down = torch.nn.functional.avg_pool2d
    targets = down(targets64, 64 // size)
    x = down(_tensor(big), 64 // size)
    pivot = G.mapping.w_avg.view(1, 1, -1).expand(1, G.num_ws, -1).clone()
    box = (slice(None), slice(None), slice(int(0.62 * size), int(0.90 * size)), slice(int(0.3 * size), int(0.7 * size)))
    want = (targets - x)[box]                                        # the mouth's change the targets ask for
    gain, err, rec = {}, {}, {}
    assert PTIConfig().mouth_focus == 1.0
    for weight, focus in ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0)):
        cfg = PTIConfig(steps=300, seed=0, mouth=weight, mouth_focus=focus)
        G_t, summary = pivotal_tuning(G, pivot, x, cfg, mouth=(offsets, targets))
        with torch.no_grad():
            out = G_t.synthesis(torch.cat([pivot, pivot + offsets]), noise_mode="const")
        change = (out[1:] - out[:1])[box]                             # the tuned generator's change there
        gain[weight, focus] = float((change * want).sum() / want.pow(2).sum())
        err[weight, focus] = float((change - want).pow(2).sum() / want.pow(2).sum())
        rec[weight, focus] = summary["psnr_after"]
        assert summary["mouth_targets"] == (4 if weight else 0)
    print("mouth change along the asked one (gain), residual / asked, without the term, with it, with its focus:",
          gain, err, "PSNR at the pivot", rec)
    assert abs(gain[0.0, 0.0]) <= 0.25 and gain[1.0, 0.0] >= 0.35, gain   # measured -0.08 and 0.59
    assert err[1.0, 0.0] <= 0.7 and err[1.0, 0.0] < 0.5 * err[0.0, 0.0], err   # measured 0.39 and 1.66
    # the focus: measured gain 0.67, residual 0.28 (without it 0.59 and 0.39; 0.52 and 0.43 drawing 2 of
    # the 4 targets a step, the earlier default)
    assert gain[1.0, 1.0] >= 0.62 and err[1.0, 1.0] <= 0.34, (gain, err)
    assert min(rec[1.0, 0.0], rec[1.0, 1.0]) >= 24.0, rec
    with pytest.raises(ValueError, match="mouth"):
        pivotal_tuning(G, pivot, x, PTIConfig(steps=1, mouth=1.0))


@pytest.mark.parametrize("name", PHOTOS)
def test_mouth_ellipse_covers_a_real_mouth_opened_and_not_the_eyes(shared, backend, name):
    """The region the motion term leaves to the mouth term (``pti.mouth_ellipse``, fixed in the aligned crop)
    holds every dlib mouth point of real aligned photos, also with the mouth opened by 3 px at 64 px
    (the jaw moves down), and none of the eye or nose-bridge points."""
    from svgen.inversion.pti import mouth_ellipse

    size = 64
    region = mouth_ellipse(size).numpy()
    arr = _photo(shared, name, size)
    opened = _u8(open_mouth(_tensor(arr), photo_landmarks(arr, backend), 3.0))
    for img in (arr, opened):
        lm = photo_landmarks(img, backend)
        assert lm is not None
        at = region[np.clip(lm[:, 1].astype(int), 0, size - 1), np.clip(lm[:, 0].astype(int), 0, size - 1)]
        assert at[48:68].min() >= 0.5, at[48:68]                  # mouth points: inside (>= half weight)
        assert at[36:48].max() == 0.0 and at[27:30].max() == 0.0   # eyes, nose bridge: outside


def test_motion_term_leaves_the_mouth_to_the_mouth_term(G):
    """With both terms on, the motion term (``motion_mouth_free``, the default) has no say inside the mouth
    region: a tuned generator that differs from another only there gets the same motion loss, and no
    gradient reaches the mouth's pixels; elsewhere in the face it still counts, and without the option
    (or without the mouth term) the mouth counts too. On the demo the two terms had pulled the mouth in
    opposite directions (svgen.inversion.pti)."""
    import copy

    from svgen.inversion.pti import _MotionTerm, mouth_ellipse

    size = G.img_resolution
    region = mouth_ellipse(size)
    pivot = G.mapping.w_avg.view(1, 1, -1).expand(1, G.num_ws, -1).clone()
    gen = torch.Generator().manual_seed(5)
    offsets = 0.3 * torch.randn(6, G.num_ws, G.w_dim, generator=gen)
    with torch.no_grad():
        pivot_img = G.synthesis(pivot, noise_mode="const")
    inside = (region >= 1.0).float()                                   # where the term must be blind
    face_only = torch.zeros(size, size)
    face_only[int(0.35 * size):int(0.5 * size), int(0.3 * size):int(0.7 * size)] = 1.0   # eyes: outside the mouth
    assert float((face_only * region).sum()) == 0.0 and float(inside.sum()) >= 0.03 * size * size

    class Bumped(torch.nn.Module):
        """G with a fixed pattern added where ``where`` is 1."""

        def __init__(self, where):
            super().__init__()
            self.synthesis_net, self.where = copy.deepcopy(G.synthesis), where
            self.pattern = torch.nn.Parameter(0.5 * torch.randn(1, 3, size, size, generator=gen))

        def synthesis(self, w, noise_mode="const"):
            return self.synthesis_net(w, noise_mode=noise_mode) + self.pattern * self.where

    def loss_and_grad(free: bool, where) -> tuple[float, torch.Tensor]:
        term = _MotionTerm(G, offsets, batch=4, seed=0, face_only=True, free_mouth=free)
        G_b = Bumped(where)
        loss = term.loss(G_b, pivot, pivot_img)
        loss.backward()
        return float(loss), G_b.pattern.grad.abs().sum(1)[0]          # [R, R]

    base = {free: float(_MotionTerm(G, offsets, 4, 0, True, free).loss(G, pivot, pivot_img)) for free in (False, True)}
    for free in (False, True):
        mouth_loss, mouth_grad = loss_and_grad(free, inside)
        eye_loss, eye_grad = loss_and_grad(free, face_only)
        print("free" if free else "whole face", "base", base[free], "mouth bumped", mouth_loss, "eyes bumped", eye_loss)
        if free:
            assert mouth_loss == pytest.approx(base[True], rel=1e-6) and float((mouth_grad * inside).max()) == 0.0
        else:
            assert mouth_loss > base[False] * 1.2 and float((mouth_grad * inside).max()) > 0.0
        assert eye_loss > base[free] * 1.2 and float((eye_grad * face_only).max()) > 0.0


def test_mouth_steps_widen_to_where_the_animation_opens_the_mouth_and_no_further():
    """The targets' steps stay the base ones for a motion within them; on the opening side they reach out to
    the 95 % quantile of the animation's coordinates along the direction beyond them, never past the limit,
    the inner opening step half way; the closing side stays (its targets are the closed mouth already)."""
    rng = np.random.default_rng(0)
    direction = np.zeros((4, 8), np.float32)
    direction[:2] = rng.normal(size=(2, 8))
    direction /= np.linalg.norm(direction)
    mouth = MouthDirection(direction=direction, spread=2.0, mar_std=0.05, r2=1.0, frames=100)

    def offsets(coords):                       # codes at these coordinates (in spreads) plus orthogonal motion
        other = rng.normal(size=(len(coords), 4, 8))
        other -= (other.reshape(len(coords), -1) @ direction.reshape(-1))[:, None, None] * direction[None]
        return np.asarray(coords)[:, None, None] * 2.0 * direction[None] + other

    assert mouth_steps(None, mouth) == MOUTH_STEPS
    assert mouth_steps(offsets(np.linspace(-1.2, 1.4, 200)), mouth) == pytest.approx(MOUTH_STEPS)
    steps = mouth_steps(offsets(np.linspace(-1.0, 2.6, 201)), mouth)
    assert steps == pytest.approx((-1.5, -0.75, 2.42 / 2, 2.42), abs=1e-6), steps   # the 95 % quantile
    steps = mouth_steps(offsets(np.r_[np.full(150, -0.5), np.full(50, 5.0)]), mouth)
    assert steps == pytest.approx((-1.5, -0.75, 1.5, 3.0)), steps                 # clipped at 3 spreads
    assert mouth_steps(offsets(np.linspace(-4.0, 0.5, 100)), mouth) == pytest.approx(MOUTH_STEPS)
