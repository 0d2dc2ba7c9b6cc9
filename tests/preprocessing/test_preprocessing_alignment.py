"""FFHQ quad formulas, the eye-corner variant, the warp and its inverse, still-photo alignment."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from svgen.preprocessing.alignment import (crop_to_source, eye_corner_quad, eye_corner_transform,
                                           ffhq_quad, paste_back, quad_from_transform, quad_size,
                                           source_to_crop, transform_from_quad, warp_quad)


def _landmarks(eye_l=(100.0, 100.0), eye_r=(200.0, 100.0), mouth_l=(120.0, 220.0), mouth_r=(180.0, 220.0)):
    """68 points with the FFHQ-relevant groups at known places (other points arbitrary)."""
    lm = np.zeros((68, 2))
    lm[:] = (150.0, 160.0)
    # eye corners and lids symmetric around the eye centre, so the 6-point mean is the centre
    for base, centre in ((36, eye_l), (42, eye_r)):
        cx, cy = centre
        lm[base:base + 6] = [(cx - 15, cy), (cx - 5, cy - 4), (cx + 5, cy - 4), (cx + 15, cy),
                             (cx + 5, cy + 4), (cx - 5, cy + 4)]
    lm[48] = mouth_l
    lm[54] = mouth_r
    lm[49:54] = (150.0, 215.0)
    lm[55:68] = (150.0, 228.0)
    return lm


def test_ffhq_quad_matches_hand_computed_values():
    # eye_avg (150,100), eye_to_eye (100,0), eye_to_mouth (0,120):
    # x = (100,0) - (-120,0) -> unit (1,0) * max(2*100, 1.8*120=216) = (216,0); y = (0,216); c = (150,112)
    quad = ffhq_quad(_landmarks())
    expected = np.array([[-66.0, -104.0], [-66.0, 328.0], [366.0, 328.0], [366.0, -104.0]])
    np.testing.assert_allclose(quad, expected, atol=1e-9)
    assert quad_size(quad) == pytest.approx(432.0)


def test_ffhq_quad_eye_term_dominates_and_rotates_with_face():
    # a short face: 2*|eye_to_eye| wins over 1.8*|eye_to_mouth|
    quad = ffhq_quad(_landmarks(mouth_l=(130.0, 160.0), mouth_r=(170.0, 160.0)))
    assert quad_size(quad) == pytest.approx(400.0)
    # rotating all landmarks rotates the quad identically (about the same pivot)
    lm = _landmarks()
    a = np.deg2rad(17.0)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    pivot = np.array([40.0, -30.0])
    quad_rot = ffhq_quad((lm - pivot) @ rot.T + pivot)
    np.testing.assert_allclose(quad_rot, (ffhq_quad(lm) - pivot) @ rot.T + pivot, atol=1e-9)


def test_eye_corner_variant_ignores_the_mouth():
    lm = _landmarks()
    q0 = eye_corner_quad(lm)
    talking = lm.copy()
    talking[48:68] += (3.0, 25.0)  # the mouth opens and shifts
    np.testing.assert_allclose(eye_corner_quad(talking), q0)
    # close to FFHQ's quad for a face with average proportions (|eye_to_mouth| = 1.12 |eye_to_eye|)
    avg = _landmarks(mouth_l=(120.0, 212.0), mouth_r=(180.0, 212.0))
    c, x, _ = eye_corner_transform(avg)
    q_avg = quad_from_transform(c, x)
    assert np.hypot(*x) * 2 == pytest.approx(quad_size(q_avg))
    np.testing.assert_allclose(q_avg, ffhq_quad(avg), atol=0.02 * quad_size(q_avg))


def test_quad_transform_round_trip():
    c, x = np.array([10.0, 20.0]), np.array([30.0, 7.0])
    q = quad_from_transform(c, x)
    c2, x2, y2 = transform_from_quad(q)
    np.testing.assert_allclose(c2, c)
    np.testing.assert_allclose(x2, x)
    np.testing.assert_allclose(y2, [-7.0, 30.0])


def _pattern(h=300, w=400):
    yy, xx = np.mgrid[:h, :w]
    return np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) % 64) * 4], axis=2).astype(np.uint8)


def test_axis_aligned_warp_equals_resized_region():
    img = _pattern()
    # box x 100..199, y 50..149 in pixel centres -> quad edges at -0.5 offsets
    quad = np.array([[99.5, 49.5], [99.5, 149.5], [199.5, 149.5], [199.5, 49.5]])
    out = warp_quad(img, quad, 100, quality="high")
    np.testing.assert_array_equal(out, img[50:150, 100:200])
    small = warp_quad(img, quad, 50, quality="fast")
    ref = np.asarray(Image.fromarray(img[50:150, 100:200]).resize((50, 50), Image.BOX))
    assert np.abs(small.astype(int) - ref).max() <= 2


def test_warp_pads_by_reflection_not_black():
    img = np.full((120, 120, 3), 200, np.uint8)
    quad = quad_from_transform(np.array([20.0, 20.0]), np.array([60.0, 0.0]))  # mostly outside
    out = warp_quad(img, quad, 64)
    assert out.min() > 150  # the padding repeats the image instead of leaving black borders


def test_fast_padding_matches_ffhq_float_padding(shared):
    """The 8-bit padding of video frames stays within a level or two of FFHQ's float padding."""
    from svgen.preprocessing.alignment import _pad_fade, _pad_fade_fast

    path = shared / "data" / "photos" / "hyperstyle_aligned" / "kunis.jpg"
    region = Image.open(path).convert("RGB").resize((200, 200))
    p = (60, 40, 20, 70)
    ref = np.asarray(_pad_fade(region, p, 5.0)).astype(int)
    fast = np.asarray(_pad_fade_fast(region, p, 5.0)).astype(int)
    assert ref.shape == fast.shape == (200 + 40 + 70, 200 + 60 + 20, 3)
    diff = np.abs(fast - ref)
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 4
    # the image itself (away from its edges) is untouched
    np.testing.assert_array_equal(fast[40 + 30:40 + 170, 60 + 30:60 + 170], np.asarray(region)[30:170, 30:170])


def test_crop_source_mapping_and_paste_back():
    rng = np.random.default_rng(0)
    img = _pattern()
    quad = quad_from_transform(np.array([200.0, 150.0]), np.array([60.0, 25.0]))
    pts = rng.uniform(0, 127, size=(10, 2))
    np.testing.assert_allclose(source_to_crop(crop_to_source(pts, quad, 128), quad, 128), pts, atol=1e-9)
    # the quad's corners map to the crop's outer corners
    np.testing.assert_allclose(source_to_crop(quad, quad, 128),
                               [[-0.5, -0.5], [-0.5, 127.5], [127.5, 127.5], [127.5, -0.5]], atol=1e-9)
    crop = warp_quad(img, quad, 128, pad=False)
    back = paste_back(np.zeros_like(img), crop, quad)
    grid = np.stack(np.meshgrid(np.arange(400), np.arange(300)), -1).reshape(-1, 2)
    inside = source_to_crop(grid, quad, 128)
    inner = ((inside > 4) & (inside < 123)).all(axis=1).reshape(300, 400)
    diff = np.abs(back.astype(int) - img.astype(int))[inner]
    assert inner.sum() > 5000 and diff.mean() < 6
    assert back[~((inside > -3) & (inside < 130)).all(axis=1).reshape(300, 400)].max() == 0


@pytest.fixture(scope="module")
def dlib_backend():
    from svgen.preprocessing.landmarks import DlibLandmarks

    return DlibLandmarks("hog")


@pytest.mark.parametrize("name", ["zuckerberg.jpg", "kunis.jpg", "stone.jpg"])
def test_aligning_an_aligned_photo_gives_it_back(shared, dlib_backend, name):
    from svgen.preprocessing.pipeline import align_photo_info, load_image_rgb

    path = shared / "data" / "photos" / "hyperstyle_aligned" / name
    src = load_image_rgb(path)
    res = align_photo_info(path, 128, backend=dlib_backend)
    s = src.shape[0]
    corners = np.array([[0, 0], [0, s], [s, s], [s, 0]], float) - 0.5
    assert np.abs(res.quad - corners).max() < 0.02 * s
    ref = np.asarray(Image.fromarray(src).resize((128, 128), Image.LANCZOS)).astype(int)
    assert np.abs(res.image.astype(int) - ref).mean() < 6.0


def test_photo_with_two_faces_warns_or_fails(shared, dlib_backend):
    from svgen.preprocessing.pipeline import PreprocessWarning, align_photo_info, load_image_rgb
    from svgen.utils.errors import SvgenError

    path = shared / "data" / "photos" / "face_recognition" / "two_people.jpg"
    with pytest.warns(PreprocessWarning, match="2 faces"):
        res = align_photo_info(path, 64, backend=dlib_backend)
    assert res.num_faces == 2 and res.image.shape == (64, 64, 3)
    # the largest face was used: the crop is centred inside the larger detection
    from svgen.preprocessing.landmarks import detect_photo_faces

    boxes = sorted((f[0] for f in detect_photo_faces(dlib_backend, load_image_rgb(path))),
                   key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    cx, cy = res.quad.mean(axis=0)
    big, small = boxes[-1], boxes[0]
    assert big[0] < cx < big[2] and big[1] < cy < big[3]
    assert not (small[0] < cx < small[2] and small[1] < cy < small[3])
    with pytest.raises(SvgenError, match="exactly one"):
        align_photo_info(path, 64, strict=True, backend=dlib_backend)


def test_real_rgba_and_greyscale_photos_align(shared, dlib_backend):
    from svgen.preprocessing.pipeline import align_photo_info, load_image_rgb

    rgba = shared / "data" / "photos" / "face_recognition" / "alex-lacamoire.png"  # a real RGBA photo
    assert Image.open(rgba).mode == "RGBA"
    res = align_photo_info(rgba, 64, backend=dlib_backend)
    assert res.image.shape == (64, 64, 3) and res.num_faces == 1
    grey = np.asarray(Image.fromarray(load_image_rgb(rgba)).convert("L"))
    res_grey = align_photo_info(grey, 64, backend=dlib_backend)
    assert np.abs(res_grey.quad - res.quad).max() < 0.05 * quad_size(res.quad)


def test_image_modes_load_as_rgb(shared, tmp_path):
    from svgen.preprocessing.pipeline import load_image_rgb

    src = Image.open(shared / "data" / "photos" / "face_recognition" / "obama.jpg").convert("RGB")
    src = src.resize((src.width // 4, src.height // 4))
    rgb = np.asarray(src)
    src.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    src.convert("L").save(tmp_path / "grey.png")
    grey16 = (np.asarray(src.convert("L")).astype(np.uint16) * 257)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    rgba = src.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(tmp_path / "rgba.png")
    src.convert("P").save(tmp_path / "palette.png")
    for name in ("cmyk.jpg", "grey.png", "grey16.png", "rgba.png", "palette.png"):
        arr = load_image_rgb(tmp_path / name)
        assert arr.dtype == np.uint8 and arr.shape == rgb.shape, name
    g16 = load_image_rgb(tmp_path / "grey16.png")
    np.testing.assert_array_equal(g16[:, :, 0], np.asarray(src.convert("L")))  # scaled, not clipped
    half = load_image_rgb(tmp_path / "rgba.png").astype(int)
    assert np.abs(half - (rgb.astype(float) * 128 / 255 + 255 * 127 / 255)).max() <= 2  # on white
    assert np.abs(load_image_rgb(tmp_path / "cmyk.jpg").astype(int) - rgb).mean() < 6
