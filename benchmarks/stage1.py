"""Stage-1 speed and memory, printed as JSON (never part of the test run).

For each preset (``tiny`` at 32 and 64 px, ``paper256``) and device (CPU; CUDA with the custom ops
and with the reference ops when a GPU is present):

- ``G_images_per_s``: G_ema forward (mapping + synthesis, const noise, no grad);
- ``phase_s``: one Gmain / Greg / Dmain / Dreg phase (forward, backward, optimizer step);
- ``train_step_s``: a full G+D iteration with lazy regularisation amortised
  (Gmain + Dmain + Greg/4 + Dreg/16), and ``sec_per_kimg`` derived from it;
- ``augment_ms``: the ADA ``bgc`` pipeline at p=1 on one batch (CPU only);
- ``peak_rss_mb`` (each configuration runs in a fresh process) and, on CUDA, peak GPU memory.

CPU batches are smaller than the published ones for paper256 (stated in the output).
Run: ``.venv/bin/python benchmarks/stage1.py [--quick] [--threads N]``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

CONFIGS = [  # (preset, resolution, cpu batch, gpu batch)
    ("tiny", 32, 8, 8),
    ("tiny", 64, 8, 8),
    ("paper256", 256, 4, 32),
]


def _timed(fn, repeat: int, device) -> tuple[float, float]:
    """Median (wall seconds, process CPU seconds) of ``fn`` over ``repeat`` runs, after a warm-up.

    CPU seconds are less sensitive to other load on a shared machine than wall time.
    """
    import torch

    fn()
    walls, cpus = [], []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return sorted(walls)[len(walls) // 2], sorted(cpus)[len(cpus) // 2]


def run_one(preset_name: str, resolution: int, batch: int, device_name: str, repeat: int) -> dict:
    import dataclasses

    import torch

    from svgen.stage1_image_gan.augment import AugmentPipe, augment_config
    from svgen.stage1_image_gan.loss import StyleGAN2Loss
    from svgen.stage1_image_gan.networks import Discriminator, Generator
    from svgen.stage1_image_gan.presets import get_preset
    from svgen.training.optim import lazy_regularised_adam

    device = torch.device(device_name)
    preset = dataclasses.replace(get_preset(preset_name, resolution), batch=batch)
    torch.manual_seed(0)
    G = Generator(preset.G).to(device).train().requires_grad_(False)
    D = Discriminator(preset.D).to(device).train().requires_grad_(False)
    opt_G = lazy_regularised_adam(G.parameters(), preset.lr_G, preset.betas, preset.G_reg_interval)
    opt_D = lazy_regularised_adam(D.parameters(), preset.lr_D, preset.betas, preset.D_reg_interval)
    loss = StyleGAN2Loss(G, D, None, r1_gamma=preset.r1_gamma,
                         style_mixing_prob=preset.style_mixing_prob, pl_weight=preset.pl_weight)
    real = torch.rand(batch, 3, resolution, resolution, device=device) * 2 - 1

    G.eval()
    z = torch.randn(batch, G.z_dim, device=device)

    def g_forward():
        with torch.no_grad():
            G.synthesis(G.mapping(z), noise_mode="const")

    g_s, g_cpu = _timed(g_forward, repeat, device)
    G.train()

    def phase(name, module, opt, gain):
        def run():
            opt.zero_grad(set_to_none=True)
            module.requires_grad_(True)
            loss.accumulate_gradients(name, real, None, torch.randn(batch, G.z_dim, device=device),
                                      None, gain=gain)
            module.requires_grad_(False)
            opt.step()
        return run

    timings = {
        "Gmain": _timed(phase("Gmain", G, opt_G, 1), repeat, device),
        "Greg": _timed(phase("Greg", G, opt_G, preset.G_reg_interval), repeat, device),
        "Dmain": _timed(phase("Dmain", D, opt_D, 1), repeat, device),
        "Dreg": _timed(phase("Dreg", D, opt_D, preset.D_reg_interval), repeat, device),
    }

    def amortised(i: int) -> float:  # one iteration with lazy regularisation
        t = {k: v[i] for k, v in timings.items()}
        return (t["Gmain"] + t["Dmain"] + t["Greg"] / preset.G_reg_interval
                + t["Dreg"] / preset.D_reg_interval)

    step, step_cpu = amortised(0), amortised(1)
    out = {
        "preset": preset_name, "resolution": resolution, "batch": batch, "device": device_name,
        "ops": os.environ.get("SVGEN_OPS", "auto"),
        "G_params_M": round(sum(p.numel() for p in G.parameters()) / 1e6, 3),
        "D_params_M": round(sum(p.numel() for p in D.parameters()) / 1e6, 3),
        "G_images_per_s": round(batch / g_s, 2),
        "G_images_per_cpu_s": round(batch / g_cpu, 2),
        "phase_s": {k: round(v[0], 4) for k, v in timings.items()},
        "train_step_s": round(step, 4),
        "train_step_cpu_s": round(step_cpu, 4),
        "sec_per_kimg": round(step * 1000 / batch, 1),
    }
    if device.type == "cpu":
        pipe = AugmentPipe(augment_config("bgc"), p=1.0)
        out["augment_ms"] = round(1000 * _timed(lambda: pipe(real), repeat, device)[0], 2)
    else:
        out["peak_gpu_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1)
        out["gpu"] = torch.cuda.get_device_name(device)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny only, fewer repeats")
    ap.add_argument("--one", nargs=4, metavar=("PRESET", "RES", "BATCH", "DEVICE"),
                    help=argparse.SUPPRESS)  # internal: one configuration in this process
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's own choice)")
    args = ap.parse_args()
    if args.one:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        name, res, batch, dev = args.one
        print(json.dumps(run_one(name, int(res), int(batch), dev, args.repeat)))
        return

    import torch

    runs = []
    configs = CONFIGS[:1] if args.quick else CONFIGS
    targets = [("cpu", "ref")]
    if torch.cuda.is_available():
        targets += [("cuda", "cuda"), ("cuda", "ref")]
    for name, res, cpu_batch, gpu_batch in configs:
        for dev, ops in targets:
            batch = cpu_batch if dev == "cpu" else gpu_batch
            env = dict(os.environ, SVGEN_OPS=ops)
            repeat = 1 if (args.quick or (dev == "cpu" and name == "paper256")) else args.repeat
            cmd = [sys.executable, __file__, "--one", name, str(res), str(batch), dev,
                   "--repeat", str(repeat)] + (["--threads", str(args.threads)] if args.threads else [])
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                runs.append({"preset": name, "resolution": res, "device": dev, "ops": ops,
                             "error": proc.stderr.strip().splitlines()[-1:]})
            else:
                runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(json.dumps({
        "benchmark": "stage1",
        "torch": torch.__version__,
        "cpu_threads": args.threads or torch.get_num_threads(),
        "machine": platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "note": "train_step_s = Gmain + Dmain + Greg/4 + Dreg/16 at the given batch (paper256 CPU "
                "batch 4, the published batch is 64)",
        "runs": runs,
    }, indent=2))


if __name__ == "__main__":
    main()
