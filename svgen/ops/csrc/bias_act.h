// svgen bias_act plugin: fused bias + activation + gain + clamp, and its first/second derivatives.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

// Activation ids; must match ACTIVATIONS in svgen/ops/bias_act.py.
enum BiasActKind : int {
    kLinear = 0, kRelu = 1, kLrelu = 2, kTanh = 3, kSigmoid = 4,
    kElu = 5, kSelu = 6, kSoftplus = 7, kSwish = 8,
};

struct BiasActParams {
    const void* x;       // input, contiguous, `size` elements
    const void* b;       // bias [bias_len] or nullptr
    const void* dy;      // upstream gradient (grad > 0) or nullptr
    void* y;             // output, same shape as x
    int64_t size;        // number of elements
    int64_t bias_len;    // x.shape[dim], 0 without bias
    int64_t bias_stride; // product of x.shape[dim + 1:]
    int act;             // BiasActKind
    int grad;            // 0: y = clamp(f(v) * gain); 1: dy * f'(v) * gain * mask; 2: dy * f''(v) * gain * mask
    double alpha;        // activation parameter (lrelu slope, elu scale)
    double gain;
    double clamp;        // < 0: no clamping
};

template <typename scalar_t>
void bias_act_launch(const BiasActParams& p, cudaStream_t stream);
