"""Custom ops for StyleGAN2, one submodule each (use them as modules, NVIDIA style)::

    from svgen.ops import bias_act, upfirdn2d, conv2d_resample, modulated_conv
    bias_act.bias_act(x, b, act="lrelu"); upfirdn2d.setup_filter([1, 3, 3, 1])

Each op has a pure-PyTorch reference path (CPU, any dtype, arbitrary-order gradients) and, for
``bias_act`` and ``upfirdn2d``, a CUDA kernel in ``csrc/`` that :mod:`svgen.ops.plugin` builds
lazily on the first CUDA call (never at import). ``SVGEN_OPS=ref|cuda|auto`` picks the path.
"""
from svgen.ops import bias_act, conv2d_resample, modulated_conv, plugin, upfirdn2d

__all__ = ["bias_act", "conv2d_resample", "modulated_conv", "plugin", "upfirdn2d"]
