"""Editing directions (GANSpace of our tiny generator, the shared InterFaceGAN/GANSpace files) and
``--edit`` over time on reconstruct / sample: semantics, sidecars and refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from svgen.editing.directions import GanspaceConfig, ganspace, load_directions
from svgen.editing.edits import apply_edits, load_edits, parse_edit
from svgen.utils.errors import SvgenError
from svgen.utils.io import file_sha256

from clitools import ok_cli, run_cli

SAMPLES = 20_000


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def G(random_generator_path):
    from svgen.stage1_image_gan.checkpoints import load_generator

    return load_generator(random_generator_path)


@pytest.fixture(scope="module")
def dirs_file(random_generator_path, tmp_path_factory):
    """``svgen directions`` on the tiny generator: 8 GANSpace directions (dirs.pt + dirs.png)."""
    from svgen.cli.main import main

    out = tmp_path_factory.mktemp("dirs") / "dirs.pt"
    main(["directions", "--generator", str(random_generator_path), "--out", str(out), "--num", "8",
          "--samples", str(SAMPLES), "--columns", "3", "--device", "cpu"])
    return out


def test_ganspace_directions_are_orthonormal_and_ordered_by_variance(dirs_file, G):
    from PIL import Image

    ds = load_directions(dirs_file)
    assert ds.kind == "ganspace" and ds.vectors.shape == (8, 1, G.w_dim) and ds.sigma.shape == (8,)
    comp = ds.vectors[:, 0].astype(np.float64)
    np.testing.assert_allclose(comp @ comp.T, np.eye(8), atol=1e-5)
    assert np.all(np.diff(ds.sigma) < 0), ds.sigma
    # sigma is the spread of fresh W samples along each direction (not only of the fitted ones)
    with torch.no_grad():
        w = G.mapping(torch.randn(4000, G.z_dim, generator=torch.Generator().manual_seed(99)), None)[:, 0]
    proj_std = ((w.double().numpy() - ds.mean) @ comp.T).std(0)
    np.testing.assert_allclose(proj_std, ds.sigma, rtol=0.06)
    # the first direction carries more variance than any of 64 random unit directions
    rand = np.random.default_rng(0).standard_normal((64, G.w_dim))
    rand /= np.linalg.norm(rand, axis=1, keepdims=True)
    assert (w.double().numpy() @ rand.T).std(0).max() < ds.sigma[0]
    ckpt = torch.load(dirs_file, weights_only=True)
    assert ckpt["format"] == "svgen-directions" and ckpt["meta"]["num_samples"] == SAMPLES
    assert ckpt["meta"]["generator_sha256"] == file_sha256(ckpt["meta"]["generator"])
    # preview: one row per direction, 3 strengths from -2 to +2 sigma
    png = Image.open(dirs_file.with_suffix(".png"))
    assert png.size == (3 * G.img_resolution, 8 * G.img_resolution)
    grid = np.asarray(png).reshape(8, G.img_resolution, 3, G.img_resolution, 3)
    assert np.abs(grid[:, :, 0].astype(int) - grid[:, :, 2]).mean() > 2      # -2 sigma vs +2 sigma differ


def test_directions_preview_columns_are_not_steps(random_generator_path, tmp_path, capsys):
    """--steps counts training steps in every command; the preview's columns are --columns."""
    code, _, err = run_cli(capsys, "directions", "--generator", random_generator_path, "--out", tmp_path / "d.pt",
                           "--steps", 3)
    assert code == 2 and "--steps is now --columns" in err and not (tmp_path / "d.pt").exists()


def test_ganspace_refuses_bad_sizes(G):
    with pytest.raises(SvgenError, match="--num must be in 1..128"):
        ganspace(G, GanspaceConfig(num_components=129, num_samples=1000))
    with pytest.raises(SvgenError, match="--samples must exceed"):
        ganspace(G, GanspaceConfig(num_components=4, num_samples=100))


def test_shared_interfacegan_and_ganspace_files_load(shared, tmp_path):
    d = shared / "data" / "weights" / "stylegan2_ffhq_latent_directions"
    age, pose, pca = (load_directions(d / n) for n in ("age.pt", "pose.pt", "ffhq_pca.pt"))
    assert age.vectors.shape == (1, 1, 512) and age.sigma is None and age.kind == "vector"
    assert np.linalg.norm(age.vectors) == pytest.approx(1.0, abs=1e-5)
    assert pose.vectors.shape == (1, 18, 512)
    assert pca.vectors.shape == (80, 1, 512) and pca.sigma.shape == (80,) and pca.kind == "ganspace"
    np.testing.assert_allclose(pca.vectors[:, 0] @ pca.vectors[:, 0].T, np.eye(80), atol=1e-4)
    assert pca.sigma[0] == pytest.approx(2.8556, abs=1e-3)
    # for an 18-layer, 512-d generator: pose moves every layer, a PCA edit only the chosen ones
    (e_pose, e_pca) = load_edits([f"{d / 'pose.pt'}:0:2", f"{d / 'ffhq_pca.pt'}:3:1.5:layers=2-4"], 18, 512)
    np.testing.assert_allclose(e_pose.offset, 2 * pose.vectors[0], atol=1e-6)
    assert e_pose.describe()["unit"] == "vector"
    rows = np.linalg.norm(e_pca.offset, axis=1)
    assert np.all(rows[[0, 1, 5, 17]] == 0) and rows[2:5] == pytest.approx(1.5 * pca.sigma[3], rel=1e-5)
    assert e_pca.describe()["unit"] == "sigma" and e_pca.describe()["layers"] == [2, 4]
    # they belong to FFHQ's generator: refused for ours, naming the file
    with pytest.raises(SvgenError, match="w_dim 512 but the generator's W has 128") as exc:
        load_edits([f"{d / 'age.pt'}:0:1"], 8, 128)
    assert "age.pt" in str(exc.value)
    with pytest.raises(SvgenError, match="18 per-layer rows but the generator has 14"):
        load_edits([f"{d / 'pose.pt'}:0:1"], 14, 512)
    with pytest.raises(SvgenError, match="INDEX 80 is out of range"):
        load_edits([f"{d / 'ffhq_pca.pt'}:80:1"], 18, 512)
    # STIT's w_directions (.npy [18, 512] float64) and GANSpace's own .npz
    rng = np.random.default_rng(0)
    np.save(tmp_path / "yaw.npy", np.repeat(rng.standard_normal((1, 512)), 18, 0))
    assert load_directions(tmp_path / "yaw.npy").vectors.shape == (1, 18, 512)
    np.savez(tmp_path / "g.npz", lat_comp=pca.vectors[:5], lat_mean=pca.mean[None], lat_stdev=pca.sigma[:5])
    npz = load_directions(tmp_path / "g.npz")
    assert npz.vectors.shape == (5, 1, 512) and npz.sigma == pytest.approx(pca.sigma[:5])
    for name, content, match in (("bad.pt", b"not a torch file", "not a readable direction file"),
                                 ("nan.npy", None, "NaN")):
        p = tmp_path / name
        if content is None:
            np.save(p, np.full(512, np.nan))
        else:
            p.write_bytes(content)
        with pytest.raises(SvgenError, match=match):
            load_directions(p)
    with pytest.raises(SvgenError, match="does not exist"):
        load_directions(tmp_path / "none.pt")


def test_parse_edit_syntax():
    e = parse_edit("runs/dirs.pt:3:-1.5")
    assert (e.file, e.index, e.strength, e.layers, e.ramp) == ("runs/dirs.pt", 3, -1.5, None, None)
    e = parse_edit("C:/x/d.pt:0:2:layers=0-3:ramp=5-10")
    assert (e.file, e.layers, e.ramp) == ("C:/x/d.pt", (0, 3), (5, 10))
    assert parse_edit("d.pt:1:1:layers=4:constant").layers == (4, 4)
    for bad in ("d.pt:1", ":0:1", "d.pt:x:1", "d.pt:1:abc", "d.pt:-1:1", "d.pt:0:1:ramp=9-3", "d.pt:0:1:foo=1",
                "d.pt:0:nan", "d.pt:0:1:constant:ramp=1-2", "d.pt:0:1:layers=1-2:layers=3-4"):
        with pytest.raises(ValueError, match="--edit"):
            parse_edit(bad)


def test_apply_edits_strength_layers_and_ramp(dirs_file, G):
    ds = load_directions(dirs_file)
    ws = np.random.default_rng(1).standard_normal((12, G.num_ws, G.w_dim)).astype(np.float32)
    zero = load_edits([f"{dirs_file}:0:0"], G.num_ws, G.w_dim)
    assert np.array_equal(apply_edits(ws, zero), ws)
    assert torch.equal(apply_edits(torch.from_numpy(ws), zero), torch.from_numpy(ws))
    assert apply_edits(ws, []) is ws
    const, ramp = load_edits([f"{dirs_file}:1:2:layers=1-2", f"{dirs_file}:0:-1:ramp=4-8"], G.num_ws, G.w_dim)
    step = 2 * ds.sigma[1] * ds.vectors[1, 0]
    delta = apply_edits(ws, [const]) - ws
    np.testing.assert_allclose(delta[:, 1:3], np.broadcast_to(step, (12, 2, G.w_dim)), atol=1e-5)
    assert not delta[:, [0, 3, 4, 5, 6, 7]].any()
    full = -ds.sigma[0] * ds.vectors[0, 0]
    delta = apply_edits(ws, [ramp]) - ws
    weights = np.array([np.abs(delta[t]).max() / np.abs(full).max() for t in range(12)])
    np.testing.assert_allclose(weights, [0, 0, 0, 0, 0, .25, .5, .75, 1, 1, 1, 1], atol=1e-5)
    both = apply_edits(ws, [const, ramp])
    np.testing.assert_allclose(both, apply_edits(apply_edits(ws, [const]), [ramp]), atol=1e-5)
    # a chunk rendered from frame 6 gets the same profile as the whole clip
    np.testing.assert_allclose(apply_edits(ws[6:], [ramp], start=6), apply_edits(ws, [ramp])[6:], atol=1e-6)


def test_edit_changes_rendered_frames_and_strength_zero_reproduces_them(dirs_file, G):
    from svgen.stage1_image_gan.render import render_frames

    with torch.no_grad():
        ws = G.mapping(torch.randn(6, G.z_dim, generator=torch.Generator().manual_seed(3)), None,
                       truncation_psi=0.7).numpy()
    plain = np.stack(list(render_frames(G, ws)))
    for index in range(3):
        zero = np.stack(list(render_frames(G, apply_edits(ws, load_edits([f"{dirs_file}:{index}:0"],
                                                                          G.num_ws, G.w_dim)))))
        assert np.array_equal(zero, plain)
        edited = np.stack(list(render_frames(G, apply_edits(ws, load_edits([f"{dirs_file}:{index}:3"],
                                                                            G.num_ws, G.w_dim)))))
        assert np.abs(edited.astype(int) - plain).mean() > 3, index


@pytest.fixture(scope="module")
def store(G, random_generator_path, tmp_path_factory):
    """latents.h5: one 20-frame clip walking (with a little noise) between two mapped codes of the tiny
    generator."""
    from svgen.inversion.latent_store import LatentStoreWriter

    with torch.no_grad():
        a, b = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(7)), None,
                         truncation_psi=0.7).numpy()
    t = np.linspace(0, 1, 20, dtype=np.float32)[:, None, None]
    path = tmp_path_factory.mktemp("store") / "latents.h5"
    w = LatentStoreWriter(path, space="w+", num_ws=G.num_ws, w_dim=G.w_dim,
                          generator_sha256=file_sha256(random_generator_path))
    w.create_clip("walk", 20, fps=25.0)
    noise = 0.05 * np.random.default_rng(0).standard_normal((20, *a.shape)).astype(np.float32)
    w.write("walk", 0, (1 - t) * a + t * b + noise)
    return w.finalize()


def _frames(path):
    from svgen.preprocessing.video_io import iter_frames

    return np.stack(list(iter_frames(path))).astype(int)


def test_reconstruct_edit_over_time_and_sidecar(capsys, store, dirs_file, random_generator_path, tmp_path):
    def recon(name, *edit):
        out = tmp_path / name
        ok_cli(capsys, "reconstruct", "--latents", store, "--generator", random_generator_path, "--out", out,
               "--device", "cpu", *edit)
        return out

    plain, zero = recon("plain.mp4"), recon("zero.mp4", "--edit", f"{dirs_file}:0:0")
    ramp = recon("ramp.mp4", "--edit", f"{dirs_file}:0:3:ramp=5-15")
    assert np.array_equal(_frames(zero), _frames(plain))
    diff = np.abs(_frames(ramp) - _frames(plain)).mean(axis=(1, 2, 3))
    # frames 0-5 unedited (only H.264's B-frames leak a little), then the edit fades in until frame 15
    assert diff[:6].max() < diff[15:].min() / 5 and diff[15:].min() > 20, diff.round(1)
    assert diff[6] < diff[10] < diff[14], diff.round(1)
    side = json.loads(ramp.with_suffix(".json").read_text())
    assert side["frames"] == 20 and side["clip"] == "walk"
    (rec,) = side["edits"]
    assert rec["index"] == 0 and rec["strength"] == 3 and rec["unit"] == "sigma"
    assert rec["profile"] == {"kind": "ramp", "from_frame": 5, "to_frame": 15}
    assert rec["file_sha256"] == file_sha256(dirs_file) and rec["file"] == str(dirs_file.resolve())
    assert json.loads(plain.with_suffix(".json").read_text())["edits"] == []


def test_sample_edit_shifts_latents_and_is_recorded(capsys, store, dirs_file, random_generator_path, G, tmp_path):
    from svgen.stage2_motion.gru.model import GRUMotionConfig
    from svgen.stage2_motion.gru.train import GRUTrainConfig, train_gru

    cfg = GRUTrainConfig(latents=str(store), out=str(tmp_path / "run"),
                         model=GRUMotionConfig(window=8, h_hidden=(32,), t_hidden=(32, 64),
                                               e_hidden=(64, 64, 32, 32, 32), c_channels=(32, 64)),
                         steps=2, batch=4, stride=2, eval_windows=8, eval_long_frames=30, eval_long_num=1,
                         generator=str(random_generator_path), device="cpu")
    motion = train_gru(cfg)
    ok_cli(capsys, "sample", "--motion", motion, "--num", 2, "--frames", 6, "--out", tmp_path / "a", "--seed", 1)
    ok_cli(capsys, "sample", "--motion", motion, "--num", 2, "--frames", 6, "--out", tmp_path / "b", "--seed", 1,
           "--edit", f"{dirs_file}:2:1.5:layers=0-3", "--edit", f"{dirs_file}:0:-1")
    a, b = np.load(tmp_path / "a" / "latents.npy"), np.load(tmp_path / "b" / "latents.npy")
    edits = load_edits([f"{dirs_file}:2:1.5:layers=0-3", f"{dirs_file}:0:-1"], G.num_ws, G.w_dim)
    np.testing.assert_allclose(b, apply_edits(a, edits), atol=1e-6)
    assert not np.allclose(a, b)
    recs = json.loads((tmp_path / "b" / "sample.json").read_text())["edits"]
    assert [(r["index"], r["strength"], r["layers"]) for r in recs] == [(2, 1.5, [0, 3]), (0, -1.0, "all")]


def test_edit_refusals_are_one_line_and_write_nothing(capsys, store, dirs_file, random_generator_path, tmp_path,
                                                      shared):
    out = tmp_path / "r.mp4"
    base = ("reconstruct", "--latents", store, "--generator", random_generator_path, "--out", out, "--edit")
    for edit, code_wanted, match in (
            (f"{tmp_path / 'none.pt'}:0:1", 1, "none.pt: direction file does not exist"),
            (f"{dirs_file}:8:1", 1, "INDEX 8 is out of range (the file has 8 directions)"),
            (f"{dirs_file}:0:1:layers=2-9", 1, "outside the generator's W+ rows 0-7"),
            (f"{shared}/data/weights/stylegan2_ffhq_latent_directions/smile.pt:0:1", 1, "smile.pt: directions have w_dim 512"),
            (f"{dirs_file}:0", 2, "expected FILE:INDEX:STRENGTH")):
        code, _, err = run_cli(capsys, *base, edit)
        assert code == code_wanted and match in err, err
        if code == 1:
            assert err.startswith("svgen: error: ") and err.count("\n") == 1, err
        assert not out.exists() and not out.with_suffix(".json").exists()
    code, _, err = run_cli(capsys, "directions", "--generator", tmp_path / "no.pt", "--out", tmp_path / "d.pt")
    assert code == 1 and "no.pt: generator does not exist" in err and not (tmp_path / "d.pt").exists()
    code, _, err = run_cli(capsys, "directions", "--generator", random_generator_path, "--out", tmp_path / "d.pt",
                           "--num", 500)
    assert code == 1 and "--num must be in 1..128" in err and not (tmp_path / "d.pt").exists()
    code, _, err = run_cli(capsys, "directions", "--generator", random_generator_path, "--out", random_generator_path)
    assert code == 1 and "the output is also an input" in err
