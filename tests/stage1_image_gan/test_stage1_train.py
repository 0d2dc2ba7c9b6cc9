"""StyleGAN2 training loop: artifacts, exact resume, data order, DDP, CLI errors, quality."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from svgen.cli.main import main as svgen_main
from svgen.metrics.swd import sliced_wasserstein
from svgen.preprocessing.dataset import AlignedDataset, AlignedDatasetWriter
from svgen.stage1_image_gan.checkpoints import build_networks, load_generator
from svgen.stage1_image_gan.train import GlobalBatches, generate_images, real_reference, snapshot_tag
from svgen.utils.io import file_sha256
from svgen.utils.logging import read_jsonl


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """Run ``svgen <args>`` in-process; (exit status, stderr)."""
    try:
        svgen_main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("svgen: error: "), err
    return lines[0]


def tiny_zip(path: Path, resolution: int, frames: int = 4) -> Path:
    rng = np.random.default_rng(0)
    with AlignedDatasetWriter(path, resolution) as w:
        w.add_clip("c", fps=25.0)
        for _ in range(frames):
            w.add_frame("c", rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8))
    return path


# -- building blocks ---------------------------------------------------------------------------

def test_global_batches_resume_and_split():
    full = GlobalBatches(10, 4, 0, 1, seed=3)
    it = iter(full)
    seq = [next(it) for _ in range(10)]
    flat = sum(seq, [])
    for e in range(4):  # every epoch is a permutation of the data
        assert sorted(flat[e * 10:(e + 1) * 10]) == list(range(10))
    resumed = iter(GlobalBatches(10, 4, 0, 1, seed=3, start=6))
    assert [next(resumed) for _ in range(4)] == seq[6:]
    ranks = [iter(GlobalBatches(10, 4, r, 2, seed=3)) for r in range(2)]
    for b in range(5):  # two processes split each global batch
        assert next(ranks[0]) + next(ranks[1]) == seq[b]


def test_snapshot_names():
    assert snapshot_tag(12000) == "000012"
    assert snapshot_tag(400) == "000000.400" and snapshot_tag(12504) == "000012.504"


# -- the loop: artifacts and exact resume ----------------------------------------------------------

def test_resume_gives_identical_weights(real_frames_zip32, tmp_path, capsys):
    """6 steps in one go == 2 steps, stop, --resume for 4 more. ADA is active (p starts at 0.3)
    and its r_t accumulator is mid-interval at the stop; G, D and D's R1 phase run (the tiny preset
    has no path-length term)."""
    common = ["--data", str(real_frames_zip32), "--preset", "tiny", "--batch", "8", "--snap", "1", "--p", "0.3",
              "--no-metrics", "--device", "cpu", "--seed", "5"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli(["train-image", "--out", str(a), "--kimg", "0.048", *common], capsys)[0] == 0
    assert run_cli(["train-image", "--out", str(b), "--kimg", "0.016", *common], capsys)[0] == 0
    mid = torch.load(b / "checkpoints" / "latest.pt", weights_only=True)
    assert mid["step"] == 2 and mid["cur_nimg"] == 16 and mid["ada"]["count"] > 0
    code, err = run_cli(["train-image", "--out", str(b), "--kimg", "0.048", "--resume",
                         "--data", str(real_frames_zip32), "--device", "cpu"], capsys)
    assert code == 0, err
    ga = torch.load(a / "generator.pt", weights_only=True)
    gb = torch.load(b / "generator.pt", weights_only=True)
    for key in ("G", "G_ema", "D"):
        assert ga[key].keys() == gb[key].keys()
        for name in ga[key]:
            assert torch.allclose(ga[key][name], gb[key][name], atol=1e-6, rtol=0), (key, name)
    assert not all(torch.equal(ga["G"][k], mid["G"][k]) for k in ga["G"])  # it did train on
    last = torch.load(b / "checkpoints" / "latest.pt", weights_only=True)
    assert last["step"] == 6 and last["augment_p"] == pytest.approx(float(ga["meta"]["ada_p"]))
    # run folder contents
    assert (b / "config.json").is_file() and (b / "samples" / "reals.png").is_file()
    assert (b / "samples" / "fakes000000.png").is_file()  # kimg 0
    assert (b / "samples" / "fakes000000.048.png").is_file()  # the end
    assert (b / "checkpoints" / "network-snapshot-000000.pt").is_file()
    assert (b / "checkpoints" / "network-snapshot-000000.016.pt").is_file()  # where run 1 stopped
    records = read_jsonl(b / "log.jsonl")
    events = [(r["event"], r["step"]) for r in records if "event" in r]
    assert events == [("start", 0), ("resume", 2)]  # it continued, it did not start over
    assert records[-1]["step"] == 6 and records[-1]["kimg"] == pytest.approx(0.048)
    for k in ("loss_G", "loss_D", "ada_p", "r_t", "sec_per_kimg", "pl_mean"):
        assert k in records[-1]
    # latest.pt is a generator checkpoint too: it rebuilds the networks
    G, G_ema, D = build_networks(last)
    assert G_ema.img_resolution == 32 and D is not None


def test_trained_fixture_run(tiny_generator_path):
    """The shared trained generator: loadable, and its run logged SWD at start and end."""
    G = load_generator(tiny_generator_path)
    img = generate_images(G, 4, seed=0, device=torch.device("cpu"))
    assert img.shape == (4, 3, 32, 32) and img.dtype == torch.uint8
    run = tiny_generator_path.parent
    metrics = read_jsonl(run / "metrics.jsonl")
    assert metrics[0]["kimg"] == 0 and metrics[-1]["kimg"] > 0
    assert all(np.isfinite(m["swd"]) and len(m["swd_levels"]) == 2 for m in metrics)
    assert (run / "samples" / f"fakes{int(metrics[-1]['kimg']):06d}.png").is_file()


@pytest.mark.slow
def test_training_lowers_swd_to_real_frames(tiny_generator_path, real_frames_zip32):
    """Independent check: SWD(real, G_ema samples) after training is far below the SWD of the
    initial network (the kimg-0 snapshot), on fresh samples and all 120 real frames."""
    run = tiny_generator_path.parent
    real = real_reference(AlignedDataset(real_frames_zip32), 120)
    init = build_networks(torch.load(run / "checkpoints" / "network-snapshot-000000.pt",
                                     weights_only=True))[1]
    final = load_generator(tiny_generator_path)
    swd_init = sliced_wasserstein(real, generate_images(init, 120, 123, torch.device("cpu")), seed=1)
    swd_final = sliced_wasserstein(real, generate_images(final, 120, 123, torch.device("cpu")), seed=1)
    assert swd_final < 0.7 * swd_init, (swd_init, swd_final)


@pytest.mark.slow
def test_two_process_ddp_run(real_frames_zip32, tmp_path):
    """`svgen train-image --gpus 2 --device cpu` runs two gloo processes under torchrun; they end
    with identical weights (checked inside the loop) and rank 0 exports the generator."""
    out = tmp_path / "ddp"
    env = dict(os.environ, SVGEN_NO_PROGRESS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "svgen.cli.main", "train-image", "--data", str(real_frames_zip32),
         "--out", str(out), "--preset", "tiny", "--kimg", "0.032", "--snap", "1", "--gpus", "2",
         "--device", "cpu", "--no-metrics", "--p", "0.2"],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(out / "generator.pt", weights_only=True)
    assert ckpt["meta"]["world_size"] == 2 and ckpt["meta"]["step"] == 8     # batch 4: 32 images
    latest = torch.load(out / "checkpoints" / "latest.pt", weights_only=True)
    assert len(latest["rng"]) == 2  # both processes' RNG streams are saved for --resume
    assert not torch.equal(latest["rng"][0]["torch"], latest["rng"][1]["torch"])


# -- CLI errors: one line, exit 1, nothing half-written ------------------------------------------

def test_cli_missing_and_corrupt_dataset(tmp_path, capsys):
    code, err = run_cli(["train-image", "--data", str(tmp_path / "nope.zip"), "--out",
                         str(tmp_path / "o")], capsys)
    assert code == 1 and "nope.zip: dataset does not exist" in one_error_line(err)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"this is not a zip")
    code, err = run_cli(["train-image", "--data", str(bad), "--out", str(tmp_path / "o")], capsys)
    assert code == 1 and "bad.zip: not a zip file" in one_error_line(err)


def test_cli_resolution_mismatch(tmp_path, capsys):
    z48 = tiny_zip(tmp_path / "r48.zip", 48)
    code, err = run_cli(["train-image", "--data", str(z48), "--out", str(tmp_path / "o"),
                         "--preset", "tiny"], capsys)
    assert code == 1 and "resolution 48 does not fit preset 'tiny'" in one_error_line(err)
    z128 = tiny_zip(tmp_path / "r128.zip", 128, frames=1)
    code, err = run_cli(["train-image", "--data", str(z128), "--out", str(tmp_path / "o"),
                         "--preset", "tiny"], capsys)
    assert code == 1 and "r128.zip" in one_error_line(err)
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_cli_bad_batch_and_unwritable_out(real_frames_zip32, tmp_path, capsys):
    code, err = run_cli(["train-image", "--data", str(real_frames_zip32), "--out",
                         str(tmp_path / "o"), "--preset", "tiny", "--batch", "6"], capsys)
    assert code == 1 and "minibatch-std group" in one_error_line(err)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = run_cli(["train-image", "--data", str(real_frames_zip32), "--out",
                         str(blocker / "run"), "--preset", "tiny"], capsys)
    assert code == 1 and "cannot create output folder" in one_error_line(err)


def test_cli_resume_errors(real_frames_zip32, tmp_path, capsys, random_generator_path):
    out = tmp_path / "run"
    base = ["train-image", "--data", str(real_frames_zip32), "--out", str(out), "--preset", "tiny"]
    code, err = run_cli(base + ["--resume"], capsys)
    assert code == 1 and "no checkpoint" in one_error_line(err)
    (out / "checkpoints").mkdir(parents=True)
    latest = out / "checkpoints" / "latest.pt"
    torch.save({"format": "svgen-motion", "version": 1}, latest)
    code, err = run_cli(base + ["--resume"], capsys)
    line = one_error_line(err)
    assert code == 1 and "latest.pt" in line and "'svgen-motion'" in line
    latest.write_bytes(Path(random_generator_path).read_bytes())  # exported, no training state
    code, err = run_cli(base + ["--resume"], capsys)
    assert code == 1 and "no training state" in one_error_line(err)
    code, err = run_cli(base, capsys)  # an existing run is never overwritten silently
    assert code == 1 and "--resume" in one_error_line(err)


def test_init_starts_from_another_generator(tiny_generator_path, real_frames_zip32, tmp_path, capsys):
    """--init (transfer learning): the new run's kimg-0 snapshot holds the given generator's G, G_ema
    and D bit for bit, its first SWD is the trained generator's (not a random network's), its
    checkpoint records the source (after a --resume too), and it then trains on with a fresh image count."""
    out = tmp_path / "ft"
    code, err = run_cli(["train-image", "--data", str(real_frames_zip32), "--out", str(out),
                         "--init", str(tiny_generator_path), "--batch", "8", "--kimg", "0.008",
                         "--snap", "1", "--device", "cpu", "--seed", "3"], capsys)
    assert code == 0, err
    code, err = run_cli(["train-image", "--data", str(real_frames_zip32), "--out", str(out), "--resume",
                         "--kimg", "0.016", "--device", "cpu"], capsys)  # still records its start
    assert code == 0, err
    parent = torch.load(tiny_generator_path, weights_only=True)
    start = torch.load(out / "checkpoints" / "network-snapshot-000000.pt", weights_only=True)
    for key in ("G", "G_ema", "D"):
        for name in parent[key]:
            assert torch.equal(parent[key][name], start[key][name]), (key, name)
    final = torch.load(out / "generator.pt", weights_only=True)
    assert final["meta"]["kimg"] == pytest.approx(0.016) and final["meta"]["init"] == str(tiny_generator_path)
    assert final["meta"]["init_sha256"] == file_sha256(tiny_generator_path)
    assert not all(torch.equal(final["G"][k], parent["G"][k]) for k in parent["G"])  # it trained on
    swd_parent_start = read_jsonl(tiny_generator_path.parent / "metrics.jsonl")[0]["swd"]  # random network
    swd_init_start = read_jsonl(out / "metrics.jsonl")[0]["swd"]
    assert swd_init_start < 0.7 * swd_parent_start, (swd_init_start, swd_parent_start)


def test_cli_init_errors(tiny_generator_path, real_frames_zip32, tmp_path, capsys):
    base = ["train-image", "--out", str(tmp_path / "run"), "--init", str(tiny_generator_path)]
    code, err = run_cli(base + ["--data", str(tiny_zip(tmp_path / "a64.zip", 64))], capsys)
    line = one_error_line(err)
    assert code == 1 and str(tiny_generator_path) in line and "32 px" in line and "64 px" in line
    code, err = run_cli(base + ["--data", str(real_frames_zip32), "--resume"], capsys)
    assert code == 2 and "--init starts a new run" in err
    code, err = run_cli(base + ["--data", str(real_frames_zip32), "--preset", "paper256"], capsys)
    line = one_error_line(err)
    assert code == 1 and str(tiny_generator_path) in line and "'paper256' preset" in line, line
    assert not (tmp_path / "run").exists()  # nothing half-made that would then need --resume


def test_cli_full_disk(real_frames_zip32, tmp_path, capsys, monkeypatch):
    def no_space(obj, f, *args, **kwargs):   # torch.save writes to a path or a file object
        if hasattr(f, "write"):
            f.write(b"partial")
        else:
            Path(f).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    out = tmp_path / "run"
    code, err = run_cli(["train-image", "--data", str(real_frames_zip32), "--out", str(out),
                         "--preset", "tiny", "--kimg", "0.008", "--no-metrics", "--device", "cpu"],
                        capsys)
    line = one_error_line(err)
    assert code == 1 and "latest.pt: no space left on device" in line
    assert not (out / "checkpoints" / "latest.pt").exists()
    assert not [p for p in (out / "checkpoints").iterdir()]  # no temporary leftovers
