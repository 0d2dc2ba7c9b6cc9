"""The demo's report stage: renders what a person needs to judge each stage and writes index.html."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from svgen.demo import targets
from svgen.demo.report import aligned_grid, build_index, image_grid, plot_curves
from svgen.demo.layout import DemoConfig, Paths, run_svgen


def _signals_plot(video_json: Path, out: Path) -> Path | None:
    """Ground-truth motion of the synthetic input clip (mouth opening, blinks, head turn)."""
    if not video_json.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from svgen.metrics.plots import save_figure

    s = json.loads(video_json.read_text())
    fig, ax = plt.subplots(figsize=(8, 2.4))
    for k in ("mouth_open", "blink", "yaw"):
        ax.plot(s[k], label=k, lw=1)
    ax.set_xlabel("frame")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out, dpi=90)
    plt.close(fig)
    return out


def build_report(paths: Paths, cfg: DemoConfig, device: str = "auto", seed: int = 0) -> Path:
    """Render reconstructions, motion samples and metrics (skipping what exists) and write the page."""
    rep = paths.report
    rep.mkdir(parents=True, exist_ok=True)
    common = ["--device", device, "--seed", str(seed)]
    sections = []

    # 1. input and aligned frames
    imgs = [aligned_grid(paths.aligned, rep / "aligned_grid.png")]
    sig = _signals_plot(paths.video.with_suffix(".json"), rep / "input_signals.png")
    sections.append({"title": "1. Input and aligned frames",
                     "text": "The driving clip, and evenly spaced frames of aligned.zip (eye-corner crop, "
                             "temporally smoothed). For the embedded input, the known motion signals.",
                     "images": imgs + ([sig] if sig else []), "videos": [paths.video]})

    # 2. image GAN: G's own samples (what the generator check measures) beside real frames
    from svgen.stage1_image_gan.checkpoints import load_generator

    G = load_generator(paths.generator).eval()
    imgs = [image_grid(targets.generator_samples(G, num=32, seed=seed), rep / "image_samples.png"),
            aligned_grid(paths.aligned, rep / "real_frames.png", rows=4)]
    curves = plot_curves({"train-image": paths.generator.parent / "log.jsonl",
                          "train-encoder": paths.encoder.parent / "log.jsonl",
                          "train-motion (GRU)": paths.motion["gru"].parent / "log.jsonl"},
                         rep / "loss_curves.png")
    if curves:
        imgs.append(curves)
    sections.append({"title": "2. Image GAN (stage 1) and training curves",
                     "text": "Samples of the final generator (G_ema, truncation 0.7, fixed seeds) above "
                             "real aligned frames; loss curves of every trained stage.", "images": imgs})

    # 3. inversion: reconstructions beside the originals
    recon = rep / "reconstruction.mp4"
    if not recon.exists():
        run_svgen(["reconstruct", "--latents", str(paths.latents), "--generator", str(paths.generator),
                   "--data", str(paths.aligned), "--out", str(recon), *common], paths.logs / "reconstruct.log")
    sections.append({"title": "3. Inversion", "text": "Each aligned frame (left) and its reconstruction "
                     "from latents.h5 (right).", "videos": [recon]})

    # 4. motion
    photo = image_grid(np.asarray(targets.read_rgb(paths.photo).resize((256, 256)))[None], rep / "identity.png")
    vids = [v for v in paths.animation.values() if v.exists()]
    samples = rep / "gru_samples"
    if not samples.exists():
        run_svgen(["sample", "--motion", str(paths.motion["gru"]), "--generator", str(paths.generator),
                   "--num", "2", "--frames", str(cfg.frames), "--out", str(samples), *common],
                  paths.logs / "sample.log")
    vids += sorted(samples.glob("*.mp4"))
    sections.append({"title": "4. Generated motion", "text": "animate: the learned motion transferred to a "
                     "new identity (GRU with the PCA offset trick; StyleInV), and free samples of the GRU "
                     "motion model in the training identity.", "images": [photo], "videos": vids})

    # 5. metrics
    for model, motion in paths.motion.items():
        if not motion.exists():
            continue
        out = rep / f"metrics_{model}.json"
        if not out.exists():
            animated = paths.animation[model].exists()   # then also its identity distance to the photo
            metrics = "latent_fd,loop,acd" + (",identity" if animated else "")
            args = ["evaluate", "--motion", str(motion), "--generator", str(paths.generator), "--latents",
                    str(paths.latents), "--data", str(paths.aligned), "--metrics", metrics,
                    "--num-videos", "16", "--acd-videos", "4", "--acd-frames", "8",   # ACD: dlib, ~0.4 s a face
                    "--out", str(out), *common]
            if animated:
                args += ["--animation", str(paths.animation[model]), "--identity", str(paths.photo),
                         "--identity-frames", "16"]
            run_svgen(args, paths.logs / f"evaluate_{model}.log")
        sections.append({"title": f"5. Metrics ({model})", "json": out})

    timings = rep / "timings.json"
    if timings.exists():
        sections.append({"title": "Timings", "json": timings})

    # 0. the verdict, on top: every target beside its references
    checks = targets.measure(paths, device="cpu", seed=seed)
    targets.write(checks, rep / "targets.json")
    met = sum(c.ok for c in checks)
    sections.insert(0, {"title": f"Did it work? {met} of {len(checks)} targets met",
                        "text": "Each result beside reference values measured in the same run on the same data "
                                "(how: svgen/demo/targets.py; numbers: report/targets.json); 'good' means the "
                                "goal is reached.",
                        "table": [("check", "result", "goal", "references (same run)", "verdict"),
                                  *targets.table_rows(checks)]})
    print(targets.format_text(checks), file=sys.stderr)
    print(f"[demo] {met} of {len(checks)} targets met", file=sys.stderr)
    index = build_index(paths.root, sections, title="svgen demo: every stage")
    print(f"[demo] wrote {index}", file=sys.stderr)
    return index
