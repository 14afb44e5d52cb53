// y = x W^T + b for a few float32 rows x [R, K] and a float16 weight W [N, K], accumulating in
// float32: the decode-step product of the GPT (gpt/half_matvec.py explains why it exists; the
// block layout and the product are in half_blocks.h).
#include <torch/extension.h>

#include "half_blocks.h"

namespace {

at::Tensor half_matvec(const at::Tensor& x, const at::Tensor& packed, const c10::optional<at::Tensor>& bias,
                       int64_t out_features) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous() && x.device().is_cpu(),
              "gsv::half_matvec: x must be a contiguous float32 CPU matrix [R, K]");
  const int64_t R = x.size(0), K = x.size(1), N = out_features;
  TORCH_CHECK(K % gsv::kCols == 0, "gsv::half_matvec: K must be a multiple of 8, got ", K);
  TORCH_CHECK(packed.dim() == 4 && packed.scalar_type() == at::kHalf && packed.is_contiguous() &&
                  packed.size(0) == (N + gsv::kRows - 1) / gsv::kRows && packed.size(1) == K / gsv::kCols &&
                  packed.size(2) == gsv::kRows && packed.size(3) == gsv::kCols,
              "gsv::half_matvec: the weight must come from half_matvec.pack_rows for [N, K] = [", N, ", ", K, "]");
  const float* b = nullptr;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->is_contiguous() && bias->numel() == N,
                "gsv::half_matvec: bias must be a contiguous float32 vector [N]");
    b = bias->data_ptr<float>();
  }
  at::Tensor y = at::empty({R, N}, x.options());
  gsv::half_matvec_into(x.data_ptr<float>(), R, K, reinterpret_cast<const uint16_t*>(packed.data_ptr<at::Half>()), N,
                        b, y.data_ptr<float>());
  return y;
}

}  // namespace

// A fragment: the Python side (gpt/quantize.py) registers other gsv:: ops.
TORCH_LIBRARY_FRAGMENT(gsv, m) {
  m.def("half_matvec(Tensor x, Tensor packed, Tensor? bias, int out_features) -> Tensor");
}

TORCH_LIBRARY_IMPL(gsv, CPU, m) {
  m.impl("half_matvec", &half_matvec);
}
