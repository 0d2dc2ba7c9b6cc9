// svgen upfirdn2d plugin: argument checking, output shape and the Python binding.
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include <climits>

#include "upfirdn2d.h"

static torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor f, int64_t upx, int64_t upy,
                               int64_t downx, int64_t downy, int64_t padx0, int64_t padx1,
                               int64_t pady0, int64_t pady1, double gain)
{
    TORCH_CHECK(x.is_cuda(), "upfirdn2d: x must be a CUDA tensor");
    TORCH_CHECK(x.dim() == 4 && x.is_contiguous(), "upfirdn2d: x must be a contiguous [N, C, H, W] tensor");
    TORCH_CHECK(f.device() == x.device(), "upfirdn2d: f must be on the same device as x");
    TORCH_CHECK(f.scalar_type() == torch::kFloat, "upfirdn2d: f must be float32");
    TORCH_CHECK(f.dim() == 2 && f.is_contiguous() && f.numel() > 0, "upfirdn2d: f must be a contiguous non-empty 2-D tensor");
    TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d: scaling factors must be >= 1");
    TORCH_CHECK(x.size(2) <= INT_MAX / upy && x.size(3) <= INT_MAX / upx, "upfirdn2d: input too large");
    TORCH_CHECK(f.size(0) <= INT_MAX && f.size(1) <= INT_MAX, "upfirdn2d: filter too large");

    const int64_t in_h = x.size(2), in_w = x.size(3), fh = f.size(0), fw = f.size(1);
    const int64_t span_w = in_w * upx + padx0 + padx1 - fw;
    const int64_t span_h = in_h * upy + pady0 + pady1 - fh;
    TORCH_CHECK(span_w >= 0 && span_h >= 0, "upfirdn2d: output would be empty");
    const int64_t out_w = span_w / downx + 1;
    const int64_t out_h = span_h / downy + 1;
    TORCH_CHECK(out_w <= INT_MAX && out_h <= INT_MAX, "upfirdn2d: output too large");

    const c10::cuda::CUDAGuard device_guard(x.device());
    torch::Tensor y = torch::empty({x.size(0), x.size(1), out_h, out_w}, x.options().memory_format(at::MemoryFormat::Contiguous));
    if (y.numel() == 0)
        return y;

    UpFirDn2dParams p;
    p.x = x.data_ptr();
    p.f = f.data_ptr<float>();
    p.y = y.data_ptr();
    p.major = x.size(0) * x.size(1);
    p.in_h = static_cast<int>(in_h);
    p.in_w = static_cast<int>(in_w);
    p.out_h = static_cast<int>(out_h);
    p.out_w = static_cast<int>(out_w);
    p.fh = static_cast<int>(fh);
    p.fw = static_cast<int>(fw);
    p.upx = static_cast<int>(upx);
    p.upy = static_cast<int>(upy);
    p.downx = static_cast<int>(downx);
    p.downy = static_cast<int>(downy);
    p.padx0 = static_cast<int>(padx0);
    p.pady0 = static_cast<int>(pady0);
    p.gain = gain;

    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(),
                                    "upfirdn2d_cuda", [&] { upfirdn2d_launch<scalar_t>(p, stream); });
    return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("upfirdn2d", &upfirdn2d,
          "upfirdn2d(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, gain) (CUDA)");
}
