// svgen upfirdn2d plugin: one thread per output sample.
//
// With u the zero-inserted input (u[k] = x[k / up] when k % up == 0, else 0) and g the
// correlation taps, output sample j along one axis is
//     y[j] = gain * sum_t g[t] * u[j * down + t - pad0].
// Only taps t with (j * down + t - pad0) divisible by up touch a real input sample, so the loops
// start at the first such tap and step by up.
#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "upfirdn2d.h"

namespace {

template <typename T> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };

// Smallest t >= 0 with (base + t) % up == 0.
__device__ __forceinline__ int first_tap(int base, int up)
{
    int r = base % up;           // in (-up, up)
    if (r < 0) r += up;
    return r == 0 ? 0 : up - r;
}

template <typename scalar_t>
__global__ void upfirdn2d_kernel(UpFirDn2dParams p)
{
    using acc_t = typename AccType<scalar_t>::type;
    const scalar_t* x = static_cast<const scalar_t*>(p.x);
    scalar_t* y = static_cast<scalar_t*>(p.y);
    const int64_t plane_out = static_cast<int64_t>(p.out_h) * p.out_w;
    const int64_t plane_in = static_cast<int64_t>(p.in_h) * p.in_w;
    const int64_t total = p.major * plane_out;
    const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;

    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
        const int ox = static_cast<int>(i % p.out_w);
        const int oy = static_cast<int>((i / p.out_w) % p.out_h);
        const int64_t plane = i / plane_out;
        const scalar_t* xp = x + plane * plane_in;

        const int base_y = oy * p.downy - p.pady0;   // index into u of tap 0
        const int base_x = ox * p.downx - p.padx0;
        acc_t acc = 0;
        for (int ty = first_tap(base_y, p.upy); ty < p.fh; ty += p.upy) {
            const int iy = (base_y + ty) / p.upy;   // exact division
            if (iy < 0) continue;
            if (iy >= p.in_h) break;
            const float* frow = p.f + static_cast<int64_t>(ty) * p.fw;
            const scalar_t* xrow = xp + static_cast<int64_t>(iy) * p.in_w;
            for (int tx = first_tap(base_x, p.upx); tx < p.fw; tx += p.upx) {
                const int ix = (base_x + tx) / p.upx;
                if (ix < 0) continue;
                if (ix >= p.in_w) break;
                acc += static_cast<acc_t>(frow[tx]) * static_cast<acc_t>(xrow[ix]);
            }
        }
        y[i] = static_cast<scalar_t>(acc * static_cast<acc_t>(p.gain));
    }
}

} // namespace

template <typename scalar_t>
void upfirdn2d_launch(const UpFirDn2dParams& p, cudaStream_t stream)
{
    const int threads = 256;
    const int64_t total = p.major * static_cast<int64_t>(p.out_h) * p.out_w;
    int64_t blocks = (total + threads - 1) / threads;
    if (blocks > (int64_t(1) << 20))
        blocks = int64_t(1) << 20;  // the kernel loops over the rest
    upfirdn2d_kernel<scalar_t><<<static_cast<unsigned int>(blocks), threads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template void upfirdn2d_launch<float>(const UpFirDn2dParams&, cudaStream_t);
template void upfirdn2d_launch<double>(const UpFirDn2dParams&, cudaStream_t);
template void upfirdn2d_launch<c10::Half>(const UpFirDn2dParams&, cudaStream_t);
template void upfirdn2d_launch<c10::BFloat16>(const UpFirDn2dParams&, cudaStream_t);
