"""One command for a GPU machine (``make gpu-check``): is the CUDA path right, and is it worth it?

Within about 8 minutes on one GPU it measures, and writes to one JSON file (``--out``):

- ``gpu_tests``: the ``gpu``-marked tests (pytest ``-m gpu``), passed/failed/skipped;
- ``parity``: every op through the CUDA plugins against the reference path, forward and backward
  (input gradients), fp32 and fp16, as the largest error relative to the reference's largest value;
- ``generator_256``: a 256 px generator forward+backward, CUDA ops vs the reference path (compass
  figure: >= 2x faster);
- ``train_step_paper256``: one ``paper256`` G+D training step (``benchmarks/stage1.py``);
- ``styleinv_image_step``: one StyleInV image-mode iteration at ``paper256`` (``benchmarks/styleinv.py``);
- ``fp16_generator``: the same 256 px generator with ``num_fp16_res=4`` against fp32 (image error, speed);
- ``readme_rows``: the figures above as rows for the README's figures table.

Without a CUDA device it refuses at once (exit 2) and writes nothing.
Run: ``.venv-cuda/bin/python benchmarks/gpu_check.py --out gpu_check.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from any folder: use this checkout's svgen

from svgen.ops import bias_act, conv2d_resample, modulated_conv, plugin, upfirdn2d  # noqa: E402

# Largest error relative to the reference's largest magnitude that still counts as parity.
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2}
SPEEDUP_TARGET = 2.0


# -- pieces that run anywhere (tested on CPU) --------------------------------------------------

def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| in float64 (0 when both are all zeros); shapes must agree."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    a, b = a.detach().double(), b.detach().double()
    scale = b.abs().max().item() if b.numel() else 0.0
    diff = (a - b).abs().max().item() if b.numel() else 0.0
    return diff / scale if scale > 0 else diff


def forward_backward(fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor],
                     seed: int = 0) -> List[torch.Tensor]:
    """[output, gradient of each input the output depends on] for a fixed random output gradient."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    y = fn(*leaves)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    dy = torch.randn(y.shape, generator=gen).to(device=y.device, dtype=y.dtype)
    grads = torch.autograd.grad(y, leaves, dy, allow_unused=True)
    return [y.detach()] + [g.detach() for g in grads if g is not None]


@dataclasses.dataclass(frozen=True)
class ParityCase:
    """An op call on inputs made by ``make(device, dtype)``; ``impl`` picks the path."""
    name: str
    make: Callable[[torch.device, torch.dtype], List[torch.Tensor]]
    call: Callable[..., torch.Tensor]          # call(impl, *inputs)


def _image(c: int = 8, res: int = 32) -> Callable[[torch.device, torch.dtype], List[torch.Tensor]]:
    def make(device: torch.device, dtype: torch.dtype) -> List[torch.Tensor]:
        gen = torch.Generator(device="cpu").manual_seed(1)
        return [torch.randn(4, c, res, res, generator=gen).to(device, dtype),
                torch.randn(c, generator=gen).to(device, dtype)]
    return make


def _modconv_inputs(device: torch.device, dtype: torch.dtype) -> List[torch.Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(2)
    return [torch.randn(4, 8, 16, 16, generator=gen).to(device, dtype),
            torch.randn(16, 8, 3, 3, generator=gen).to(device, dtype),
            torch.randn(4, 8, generator=gen).to(device, dtype)]


def _with_ops(impl: str, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Run ``fn`` with SVGEN_OPS set to ``impl`` (conv2d_resample and modulated_conv follow it)."""
    previous = os.environ.get(plugin.ENV_MODE)
    os.environ[plugin.ENV_MODE] = impl
    try:
        return fn()
    finally:
        if previous is None:
            os.environ.pop(plugin.ENV_MODE, None)
        else:
            os.environ[plugin.ENV_MODE] = previous


def parity_cases() -> List[ParityCase]:
    """Every op and the variants the networks use."""
    f = [1, 3, 3, 1]

    def filt(x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d.setup_filter(f, device=x.device)

    cases = [ParityCase(f"bias_act_{act}", _image(),
                        lambda impl, x, b, act=act: bias_act.bias_act(x, b, act=act, clamp=64, impl=impl))
             for act in bias_act.ACTIVATIONS]
    cases += [
        ParityCase("upsample2d", _image(), lambda impl, x, b: upfirdn2d.upsample2d(x, filt(x), impl=impl)),
        ParityCase("downsample2d", _image(), lambda impl, x, b: upfirdn2d.downsample2d(x, filt(x), impl=impl)),
        ParityCase("filter2d_separable", _image(), lambda impl, x, b: upfirdn2d.filter2d(
            x, upfirdn2d.setup_filter([1, 2, 3, 4, 4, 3, 2, 1], device=x.device), impl=impl)),
        ParityCase("conv2d_resample_up", _modconv_inputs, lambda impl, x, w, s: _with_ops(
            impl, lambda: conv2d_resample.conv2d_resample(x, w, filt(x), up=2, padding=1))),
        ParityCase("conv2d_resample_down", _modconv_inputs, lambda impl, x, w, s: _with_ops(
            impl, lambda: conv2d_resample.conv2d_resample(x, w, filt(x), down=2, padding=1))),
        ParityCase("modulated_conv_fused_up", _modconv_inputs, lambda impl, x, w, s: _with_ops(
            impl, lambda: modulated_conv.modulated_conv2d(x, w, s, up=2, padding=1, resample_filter=filt(x),
                                                          fused_modconv=True))),
        ParityCase("modulated_conv_nonfused", _modconv_inputs, lambda impl, x, w, s: _with_ops(
            impl, lambda: modulated_conv.modulated_conv2d(x, w, s, padding=1, fused_modconv=False))),
    ]
    return cases


def parity(device: torch.device, dtype: torch.dtype, impl: str = "cuda") -> Dict[str, Dict[str, Any]]:
    """Per case: forward and backward error of ``impl`` against ``ref``, and whether within tolerance.

    On a CPU device both paths are the reference (CPU tensors never use the plugins), so every
    error is 0: that is how this function is tested without a GPU.
    """
    out = {}
    for case in parity_cases():
        inputs = case.make(device, dtype)
        got = forward_backward(lambda *t: case.call(impl, *t), inputs)
        ref = forward_backward(lambda *t: case.call("ref", *t), inputs)
        fwd = relative_error(got[0], ref[0])
        bwd = max(relative_error(g, r) for g, r in zip(got[1:], ref[1:]))
        out[case.name] = {"fwd": float(f"{fwd:.3g}"), "bwd": float(f"{bwd:.3g}"),
                          "ok": max(fwd, bwd) <= TOLERANCE[dtype]}
    return out


def pytest_counts(output: str) -> Dict[str, int]:
    """passed/failed/skipped/error counts from pytest's closing line (zeros for absent kinds)."""
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0, "deselected": 0}
    lines = [ln for ln in output.strip().splitlines() if re.search(r"\d+ (passed|failed|skipped|error|deselected)", ln)]
    for number, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", lines[-1] if lines else ""):
        counts["errors" if kind.startswith("error") else kind] = int(number)
    return counts


def readme_rows(fig: Dict[str, Any]) -> List[str]:
    """Rows ``| what | figure |`` for the README's figures table from the measured figures."""
    rows = []
    gpu = fig.get("gpu", "GPU")
    if "gpu_tests" in fig:
        t = fig["gpu_tests"]
        rows.append(f"| `gpu`-marked tests on {gpu} | {t['passed']} passed, {t['failed']} failed, "
                    f"{t['skipped']} skipped ({t['seconds']:.0f} s) |")
    if "parity" in fig:
        for dtype, table in fig["parity"].items():
            worst = max(table.items(), key=lambda kv: max(kv[1]["fwd"], kv[1]["bwd"]))
            bad = [k for k, v in table.items() if not v["ok"]]
            rows.append(f"| CUDA ops vs reference, {dtype}, {len(table)} cases | worst {worst[0]}: "
                        f"fwd {worst[1]['fwd']:.2g}, bwd {worst[1]['bwd']:.2g} "
                        f"({'all within' if not bad else 'outside: ' + ', '.join(bad) + ';'} "
                        f"tolerance {TOLERANCE[getattr(torch, dtype)]:g}) |")
    if "generator_256" in fig:
        g = fig["generator_256"]
        rows.append(f"| 256 px G forward+backward, batch {g['batch']}, {gpu} | CUDA ops {g['cuda_ms']:.1f} ms, "
                    f"reference {g['ref_ms']:.1f} ms: {g['speedup']:.2f}x (target >= {SPEEDUP_TARGET:g}x "
                    f"{'met' if g['speedup'] >= SPEEDUP_TARGET else 'not met'}) |")
    if "train_step_paper256" in fig and "train_step_s" in fig["train_step_paper256"]:
        s = fig["train_step_paper256"]
        rows.append(f"| stage 1, `paper256`, batch {s['batch']}, {gpu}: one training step | {s['train_step_s']:.3g} s "
                    f"({s['sec_per_kimg']:.0f} s/kimg; G forward {s['G_images_per_s']:.0f} img/s) |")
    if "styleinv_image_step" in fig and "image_iter_s" in fig["styleinv_image_step"]:
        s = fig["styleinv_image_step"]
        rows.append(f"| StyleInV iteration, `paper256`, batch {s['batch']}, {gpu} | image mode {s['image_iter_s']:.3g} s, "
                    f"latent mode {s['latent_iter_s']:.3g} s |")
    if "fp16_generator" in fig:
        h = fig["fp16_generator"]
        rows.append(f"| 256 px G, `num_fp16_res=4` vs fp32, {gpu} | image error {h['mean_abs_error']:.3g} mean, "
                    f"{h['max_abs_error']:.3g} max (range [-1, 1]); {h['fp16_ms']:.1f} vs {h['fp32_ms']:.1f} ms |")
    return rows


# -- GPU measurements --------------------------------------------------------------------------

def _time_ms(fn: Callable[[], Any], iters: int) -> float:
    """Median of ``iters`` timed runs after two warm-ups, in milliseconds (CUDA synchronised)."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(iters):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def _generator(num_fp16_res: int = 0, seed: int = 0) -> torch.nn.Module:
    """The untrained ``paper256`` generator (``conv_clamp=256``) with ``num_fp16_res`` fp16 levels;
    speed and fp16 error do not need trained weights."""
    from svgen.stage1_image_gan.networks import Generator
    from svgen.stage1_image_gan.presets import get_preset

    cfg = dataclasses.replace(get_preset("paper256").G, num_fp16_res=num_fp16_res)
    torch.manual_seed(seed)
    return Generator(cfg)


def generator_speed(device: torch.device, batch: int, iters: int) -> Dict[str, Any]:
    """256 px G forward+backward (gradient to the weights), CUDA ops vs the reference path."""
    G = _generator().to(device).train()
    z = torch.randn(batch, G.z_dim, device=device)

    def step() -> None:
        G.zero_grad(set_to_none=True)
        G(z, noise_mode="const").square().mean().backward()

    cuda_ms = _with_ops("cuda", lambda: _time_ms(step, iters))
    ref_ms = _with_ops("ref", lambda: _time_ms(step, iters))
    return {"batch": batch, "cuda_ms": round(cuda_ms, 2), "ref_ms": round(ref_ms, 2),
            "speedup": round(ref_ms / cuda_ms, 3), "target": SPEEDUP_TARGET}


def fp16_generator(device: torch.device, batch: int, iters: int) -> Dict[str, Any]:
    """The same weights with ``num_fp16_res=4`` and without: image difference and speed."""
    G32 = _generator(0).to(device).eval().requires_grad_(False)
    G16 = _generator(4).to(device).eval().requires_grad_(False)
    G16.load_state_dict(G32.state_dict())
    z = torch.randn(batch, G32.z_dim, device=device)

    def render(G: torch.nn.Module) -> torch.Tensor:
        return G.synthesis(G.mapping(z), noise_mode="const").float()

    with torch.no_grad():
        a, b = render(G16), render(G32)
        out = {"batch": batch, "mean_abs_error": round((a - b).abs().mean().item(), 5),
               "max_abs_error": round((a - b).abs().max().item(), 5),
               "finite": bool(torch.isfinite(a).all())}
        out["fp16_ms"] = round(_time_ms(lambda: render(G16), iters), 2)
        out["fp32_ms"] = round(_time_ms(lambda: render(G32), iters), 2)
    return out


def _run(cmd: List[str], timeout: float, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=max(timeout, 30),
                          env={**os.environ, **(env or {})})


def _last_json(text: str) -> Dict[str, Any]:
    """The JSON document a benchmark printed last (one line, or an indented block)."""
    start = text.rfind("\n{")
    return json.loads(text[start + 1:] if start >= 0 else text)


def _failure(proc: subprocess.CompletedProcess) -> Dict[str, Any]:
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return {"error": f"exit {proc.returncode}: {lines[-1] if lines else ''}"}


def gpu_tests(timeout: float) -> Dict[str, Any]:
    t0 = time.perf_counter()
    proc = _run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"], timeout)
    counts = pytest_counts(proc.stdout)
    failed = [ln.split(" ")[1] for ln in proc.stdout.splitlines() if ln.startswith("FAILED ")]
    return {**counts, "seconds": round(time.perf_counter() - t0, 1), "exit": proc.returncode,
            "failed_tests": failed}


def train_step(batch: int, timeout: float) -> Dict[str, Any]:
    proc = _run([sys.executable, "benchmarks/stage1.py", "--one", "paper256", "256", str(batch), "cuda",
                 "--repeat", "1"], timeout, env={plugin.ENV_MODE: "cuda"})
    return _last_json(proc.stdout) if proc.returncode == 0 else _failure(proc)


def styleinv_step(batch: int, timeout: float) -> Dict[str, Any]:
    proc = _run([sys.executable, "benchmarks/styleinv.py", "--preset", "paper256", "--batch", str(batch),
                 "--iters", "1", "--frames", "32", "--device", "cuda"], timeout, env={plugin.ENV_MODE: "cuda"})
    if proc.returncode != 0:
        return _failure(proc)
    doc = _last_json(proc.stdout)
    return {"batch": batch, "image_iter_s": doc["image_mode"]["iter_s"],
            "latent_iter_s": doc["latent_mode"]["iter_s"], "latent_over_image": doc["latent_over_image"]}


@dataclasses.dataclass
class GpuCheckConfig:
    """Sizes of the measurements (defaults fit 8 minutes on one recent GPU)."""
    out: str = "gpu_check.json"
    batch: int = 8
    train_batch: int = 32
    styleinv_batch: int = 8
    iters: int = 10
    budget_s: float = 480.0


def _sections(cfg: GpuCheckConfig, device: torch.device,
              deadline: float) -> Iterator[Tuple[str, Callable[[], Dict[str, Any]]]]:
    """(name, measurement) in running order; subprocess sections get the time that is left."""
    def left() -> float:
        return deadline - time.perf_counter()

    yield "gpu_tests", lambda: gpu_tests(min(left(), 240))
    yield "parity", lambda: {str(d).replace("torch.", ""): parity(device, d)
                             for d in (torch.float32, torch.float16)}
    yield "generator_256", lambda: generator_speed(device, cfg.batch, cfg.iters)
    yield "fp16_generator", lambda: fp16_generator(device, cfg.batch, cfg.iters)
    yield "train_step_paper256", lambda: train_step(cfg.train_batch, left())
    yield "styleinv_image_step", lambda: styleinv_step(cfg.styleinv_batch, left())


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=GpuCheckConfig.out, help="JSON file to write")
    ap.add_argument("--batch", type=int, default=GpuCheckConfig.batch)
    ap.add_argument("--iters", type=int, default=GpuCheckConfig.iters)
    args = ap.parse_args(argv)
    cfg = GpuCheckConfig(out=args.out, batch=args.batch, iters=args.iters)
    if not torch.cuda.is_available():
        kind = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
        print(f"gpu-check: no CUDA device visible (torch {torch.__version__}, {kind}): run it on a GPU "
              "machine", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    start = time.perf_counter()
    deadline = start + cfg.budget_s
    fig: Dict[str, Any] = {"gpu": torch.cuda.get_device_name(device), "torch": torch.__version__,
                           "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%d")}
    for name, measure in _sections(cfg, device, deadline):
        if time.perf_counter() > deadline:
            fig[name] = {"error": "skipped: the time budget was spent"}
            continue
        t0 = time.perf_counter()
        try:
            fig[name] = measure()
        except Exception as exc:  # noqa: BLE001 - one failed section must not lose the others
            fig[name] = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"}
        print(f"gpu-check: {name} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    fig["seconds"] = round(time.perf_counter() - start, 1)
    fig["readme_rows"] = readme_rows(fig)
    out = Path(cfg.out)
    with tempfile.NamedTemporaryFile("w", dir=out.resolve().parent, suffix=".tmp", delete=False) as tmp:
        json.dump(fig, tmp, indent=2)
    os.replace(tmp.name, out)
    print("\n".join(fig["readme_rows"]))
    problems = [k for k, v in fig.items() if isinstance(v, dict) and "error" in v]
    problems += [f"parity {d}: {k}" for d, t in fig.get("parity", {}).items() if isinstance(t, dict)
                 for k, v in t.items() if isinstance(v, dict) and not v.get("ok", True)]
    if fig.get("gpu_tests", {}).get("failed"):
        problems.append("gpu_tests")
    print(f"gpu-check: {out} written; {'all checks passed' if not problems else 'problems: ' + ', '.join(problems)}",
          file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
