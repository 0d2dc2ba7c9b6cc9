// svgen upfirdn2d plugin: zero-insertion upsampling, padding, 2-D FIR correlation, downsampling.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

struct UpFirDn2dParams {
    const void* x;        // input [major, in_h, in_w], contiguous (major = N * C)
    const float* f;       // correlation taps [fh, fw], contiguous float32
    void* y;              // output [major, out_h, out_w]
    int64_t major;
    int in_h, in_w, out_h, out_w;
    int fh, fw;
    int upx, upy, downx, downy;
    int padx0, pady0;     // leading padding (negative = crop); trailing padding is implied by out_h/out_w
    double gain;
};

template <typename scalar_t>
void upfirdn2d_launch(const UpFirDn2dParams& p, cudaStream_t stream);
