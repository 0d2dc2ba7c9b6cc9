// svgen bias_act plugin: the element-wise kernel.
//
// For v = x + b, every thread evaluates the activation f and its derivatives f', f'' in the
// accumulation type (float for half/bfloat16/float, double for double) and writes
//   grad 0: y = clamp(f(v) * gain)
//   grad 1: dy * f'(v) * gain * [|f(v) * gain| <= clamp]
//   grad 2: dy * f''(v) * gain * [|f(v) * gain| <= clamp]
#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "bias_act.h"

namespace {

template <typename T> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };

__device__ __forceinline__ float dev_exp(float v) { return expf(v); }
__device__ __forceinline__ double dev_exp(double v) { return exp(v); }
__device__ __forceinline__ float dev_tanh(float v) { return tanhf(v); }
__device__ __forceinline__ double dev_tanh(double v) { return tanh(v); }
__device__ __forceinline__ float dev_log1p(float v) { return log1pf(v); }
__device__ __forceinline__ double dev_log1p(double v) { return log1p(v); }

// f(v), f'(v), f''(v) for one activation.
template <typename acc_t>
__device__ __forceinline__ void activation(int act, acc_t v, acc_t alpha, acc_t& f, acc_t& d1, acc_t& d2)
{
    const acc_t one = 1, zero = 0;
    switch (act) {
    case kRelu:
        f = v > zero ? v : zero; d1 = v > zero ? one : zero; d2 = zero; break;
    case kLrelu:
        f = v > zero ? v : v * alpha; d1 = v > zero ? one : alpha; d2 = zero; break;
    case kTanh: {
        const acc_t t = dev_tanh(v);
        f = t; d1 = one - t * t; d2 = acc_t(-2) * t * d1; break;
    }
    case kSigmoid: {
        const acc_t s = one / (one + dev_exp(-v));
        f = s; d1 = s * (one - s); d2 = d1 * (one - acc_t(2) * s); break;
    }
    case kElu: {
        const acc_t e = dev_exp(v);
        f = v > zero ? v : alpha * (e - one); d1 = v > zero ? one : alpha * e; d2 = v > zero ? zero : alpha * e; break;
    }
    case kSelu: {
        const acc_t scale = acc_t(1.0507009873554805), a = acc_t(1.6732632423543772);
        const acc_t e = dev_exp(v);
        f = v > zero ? scale * v : scale * a * (e - one);
        d1 = v > zero ? scale : scale * a * e;
        d2 = v > zero ? zero : scale * a * e;
        break;
    }
    case kSoftplus: {
        const acc_t s = one / (one + dev_exp(-v));
        f = v > acc_t(20) ? v : dev_log1p(dev_exp(v)); d1 = s; d2 = s * (one - s); break;
    }
    case kSwish: {
        const acc_t s = one / (one + dev_exp(-v));
        f = v * s; d1 = s * (one + v * (one - s)); d2 = s * (one - s) * (acc_t(2) + v * (one - acc_t(2) * s)); break;
    }
    default:  // kLinear
        f = v; d1 = one; d2 = zero; break;
    }
}

template <typename scalar_t>
__global__ void bias_act_kernel(BiasActParams p)
{
    using acc_t = typename AccType<scalar_t>::type;
    const scalar_t* x = static_cast<const scalar_t*>(p.x);
    const scalar_t* b = static_cast<const scalar_t*>(p.b);
    const scalar_t* dy = static_cast<const scalar_t*>(p.dy);
    scalar_t* y = static_cast<scalar_t*>(p.y);
    const acc_t alpha = static_cast<acc_t>(p.alpha);
    const acc_t gain = static_cast<acc_t>(p.gain);
    const acc_t clamp = static_cast<acc_t>(p.clamp);
    const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;

    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < p.size; i += step) {
        acc_t v = static_cast<acc_t>(x[i]);
        if (b != nullptr)
            v += static_cast<acc_t>(b[(i / p.bias_stride) % p.bias_len]);
        acc_t f, d1, d2;
        activation<acc_t>(p.act, v, alpha, f, d1, d2);
        const acc_t out = f * gain;
        acc_t r;
        if (p.grad == 0) {
            r = out;
            if (clamp >= acc_t(0))
                r = r > clamp ? clamp : (r < -clamp ? -clamp : r);
        } else {
            const bool pass = clamp < acc_t(0) || (out <= clamp && out >= -clamp);
            const acc_t d = p.grad == 1 ? d1 : d2;
            r = pass ? static_cast<acc_t>(dy[i]) * d * gain : acc_t(0);
        }
        y[i] = static_cast<scalar_t>(r);
    }
}

} // namespace

template <typename scalar_t>
void bias_act_launch(const BiasActParams& p, cudaStream_t stream)
{
    const int threads = 256;
    int64_t blocks = (p.size + threads - 1) / threads;
    if (blocks > (int64_t(1) << 20))
        blocks = int64_t(1) << 20;  // the kernel loops over the rest
    bias_act_kernel<scalar_t><<<static_cast<unsigned int>(blocks), threads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template void bias_act_launch<float>(const BiasActParams&, cudaStream_t);
template void bias_act_launch<double>(const BiasActParams&, cudaStream_t);
template void bias_act_launch<c10::Half>(const BiasActParams&, cudaStream_t);
template void bias_act_launch<c10::BFloat16>(const BiasActParams&, cudaStream_t);
