// svgen bias_act plugin: argument checking and the Python binding.
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include "bias_act.h"

static torch::Tensor bias_act(torch::Tensor x, torch::Tensor b, torch::Tensor dy, int64_t act,
                              int64_t grad, double alpha, double gain, double clamp, int64_t dim)
{
    TORCH_CHECK(x.is_cuda(), "bias_act: x must be a CUDA tensor");
    TORCH_CHECK(x.is_contiguous(), "bias_act: x must be contiguous");
    TORCH_CHECK(act >= kLinear && act <= kSwish, "bias_act: unknown activation id ", act);
    TORCH_CHECK(grad >= 0 && grad <= 2, "bias_act: grad must be 0, 1 or 2");
    TORCH_CHECK(x.dim() == 0 || (dim >= 0 && dim < x.dim()), "bias_act: dim out of range");
    if (b.numel() > 0) {
        TORCH_CHECK(b.device() == x.device(), "bias_act: b must be on the same device as x");
        TORCH_CHECK(b.scalar_type() == x.scalar_type(), "bias_act: b must have the dtype of x");
        TORCH_CHECK(b.dim() == 1 && b.is_contiguous(), "bias_act: b must be a contiguous vector");
        TORCH_CHECK(x.dim() > 0 && b.numel() == x.size(dim), "bias_act: b must have x.shape[dim] elements");
    }
    if (grad > 0) {
        TORCH_CHECK(dy.device() == x.device(), "bias_act: dy must be on the same device as x");
        TORCH_CHECK(dy.scalar_type() == x.scalar_type(), "bias_act: dy must have the dtype of x");
        TORCH_CHECK(dy.sizes() == x.sizes() && dy.is_contiguous(), "bias_act: dy must be contiguous and shaped like x");
    }

    const c10::cuda::CUDAGuard device_guard(x.device());
    torch::Tensor y = torch::empty_like(x, at::MemoryFormat::Contiguous);
    if (x.numel() == 0)
        return y;

    BiasActParams p;
    p.x = x.data_ptr();
    p.b = b.numel() > 0 ? b.data_ptr() : nullptr;
    p.dy = grad > 0 ? dy.data_ptr() : nullptr;
    p.y = y.data_ptr();
    p.size = x.numel();
    p.bias_len = b.numel();
    p.bias_stride = 1;
    for (int64_t i = dim + 1; i < x.dim(); i++)
        p.bias_stride *= x.size(i);
    p.act = static_cast<int>(act);
    p.grad = static_cast<int>(grad);
    p.alpha = alpha;
    p.gain = gain;
    p.clamp = clamp;

    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(),
                                    "bias_act_cuda", [&] { bias_act_launch<scalar_t>(p, stream); });
    return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("bias_act", &bias_act,
          "bias_act(x, b, dy, act, grad, alpha, gain, clamp, dim): fused bias + activation (CUDA)");
}
