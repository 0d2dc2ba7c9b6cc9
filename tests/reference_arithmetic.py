"""The reference arithmetic of the bit-exact tests (golden trainers, golden latents).

Last-bit equality only holds for one arithmetic, and torch's default one depends on the CPU: ATen
picks AVX2 or AVX-512 kernels, oneDNN and NNPACK pick convolution algorithms, MKL picks code paths
by processor. A CI machine with another x86 CPU drifted 1e-6 to 1e-2 relative in a few training
steps and wrote other latents. So the bit-exact tests run their code in a child process that pins,
before torch loads:

- ``REFERENCE_ENV``: ATen's baseline kernels, MKL's conditional-numerical-reproducibility mode
  ``COMPATIBLE`` (the same bits on every x86-64 CPU), one thread;
- :func:`pin_torch`: convolutions without oneDNN and NNPACK (im2col and MKL's GEMM).

Checked here: capping MKL at SSE4.2 and oneDNN at SSE4.1 changes no bit of a pinned run, while the
same caps change the default arithmetic's results. The references were recorded in this mode by
the code they stand for. Run as a script it is a launcher:

    python tests/reference_arithmetic.py ARGS...      = ``svgen ARGS...`` in the reference arithmetic
"""
from __future__ import annotations

import os
import platform
import sys

REFERENCE_ENV = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "1",
                 "MKL_NUM_THREADS": "1"}
CANNOT_PIN = 3     # exit status of a launcher on a machine that cannot run the reference arithmetic


def problem() -> str | None:
    """Why this process cannot run the reference arithmetic (None when it can); imports torch."""
    import torch

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the bit-exact references are x86-64 arithmetic (MKL); this is {platform.machine()}"
    if not torch.backends.mkl.is_available():
        return "the bit-exact references need MKL (torch was built without it)"
    wrong = {k: os.environ.get(k) for k, v in REFERENCE_ENV.items() if os.environ.get(k) != v}
    if wrong:
        return f"the environment was not pinned before torch loaded: {wrong}"
    return None


def pin_torch() -> None:
    """The in-process part: one thread, no oneDNN, no NNPACK (after ``REFERENCE_ENV`` was set)."""
    import torch

    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False       # convolutions through im2col + MKL GEMM
    torch.backends.nnpack.set_flags(False)      # (NNPACK picks AVX2 or scalar kernels by CPU)


def main(argv: list[str]) -> int:
    """``svgen argv...`` in the reference arithmetic; exits CANNOT_PIN (with the reason) where it can't."""
    why = problem()
    if why:
        print(f"reference_arithmetic: {why}", file=sys.stderr)
        return CANNOT_PIN
    pin_torch()
    from svgen.cli.main import main as svgen_main

    try:
        svgen_main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    os.environ.update(REFERENCE_ENV)     # before torch loads
    raise SystemExit(main(sys.argv[1:]))
