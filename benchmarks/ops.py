"""Speed of the ops, printed as JSON: ``python benchmarks/ops.py [--device cuda] [--iters N]``.

On CPU only the reference path exists; on CUDA each op is timed with the reference and the CUDA
plugin (forward + backward), so the plugin's speed-up is measured rather than assumed.
"""
from __future__ import annotations

import argparse
import os
import json
import time
from typing import Callable, Dict

import torch

from svgen.ops import bias_act, conv2d_resample, modulated_conv, plugin, upfirdn2d


def _time(fn: Callable[[], torch.Tensor], device: torch.device, iters: int) -> float:
    """Mean time of ``iters`` runs after two warm-up runs, in milliseconds."""
    for _ in range(2):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / iters * 1e3


def _cases(device: torch.device, dtype: torch.dtype, impl: str, batch: int, channels: int,
           res: int) -> Dict[str, Callable[[], torch.Tensor]]:
    x = torch.randn(batch, channels, res, res, device=device, dtype=dtype, requires_grad=True)
    b = torch.zeros(channels, device=device, dtype=dtype, requires_grad=True)
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device=device)
    w = torch.randn(channels, channels, 3, 3, device=device, dtype=dtype, requires_grad=True)
    s = torch.randn(batch, channels, device=device, dtype=dtype, requires_grad=True)

    def fwd_bwd(make: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            y = make()
            y.backward(torch.ones_like(y))
            return y
        return run

    return {
        "bias_act_lrelu": fwd_bwd(lambda: bias_act.bias_act(x, b, act="lrelu", clamp=256, impl=impl)),
        "upsample2d": fwd_bwd(lambda: upfirdn2d.upsample2d(x, f, impl=impl)),
        "downsample2d": fwd_bwd(lambda: upfirdn2d.downsample2d(x, f, impl=impl)),
        "conv2d_resample_up": fwd_bwd(lambda: conv2d_resample.conv2d_resample(x, w, f, up=2, padding=1)),
        "modconv_fused_up": fwd_bwd(lambda: modulated_conv.modulated_conv2d(
            x, w, s, up=2, padding=1, resample_filter=f, fused_modconv=True)),
        "modconv_nonfused": fwd_bwd(lambda: modulated_conv.modulated_conv2d(
            x, w, s, padding=1, fused_modconv=False)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--res", type=int, default=32)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtypes = [torch.float32] + ([torch.float16] if device.type == "cuda" else [])
    impls = ["ref"] + (["cuda"] if device.type == "cuda" else [])
    results = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "shape": [args.batch, args.channels, args.res, args.res], "ms_fwd_bwd": {}}
    for dtype in dtypes:
        for impl in impls:
            env_key = f"{impl}_{str(dtype).replace('torch.', '')}"
            previous = os.environ.get(plugin.ENV_MODE)
            os.environ[plugin.ENV_MODE] = impl  # conv2d_resample/modconv follow the env
            try:
                for name, fn in _cases(device, dtype, impl, args.batch, args.channels, args.res).items():
                    results["ms_fwd_bwd"].setdefault(name, {})[env_key] = round(
                        _time(fn, device, args.iters), 4)
            finally:
                if previous is None:
                    os.environ.pop(plugin.ENV_MODE, None)
                else:
                    os.environ[plugin.ENV_MODE] = previous
    if device.type == "cuda":
        results["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
