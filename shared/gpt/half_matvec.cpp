// y = x W^T + b for a few float32 rows x [R, K] and a float16 weight W [N, K], accumulating in
// float32: the decode-step product of the GPT (gpt/half_matvec.py explains why it exists).
//
// A decode step streams every weight from memory once, so the kernel is arranged around memory.
// W arrives packed by half_matvec.pack_rows as [ceil(N/8), K/8, 8 rows, 8 columns]: each block of
// 8 output rows is one contiguous run that the CPU's prefetcher streams in order (row-major W
// made 8 interleaved short streams: ~35% slower). Each thread takes whole blocks, widens 8 halves
// at a time with F16C and multiply-adds them into 8-lane float32 accumulators; a block stays in
// L1/L2 while every activation row reuses it. Each output is a sum over lanes (column k goes to
// lane k mod 8) followed by the lane sum, whatever the thread count, so results do not depend on
// how the work is split.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

namespace {

constexpr int64_t kRows = 8;    // output rows per block
constexpr int64_t kCols = 8;    // columns per packed group (one 8-lane vector)
constexpr int64_t kGrain = 16;  // blocks per thread at least: small products stay on one thread

inline float lane_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// One activation row times one packed block: the 8 dot products, into `out`.
inline void dot_block(const float* x, const uint16_t* block, int64_t K, float out[kRows]) {
  __m256 acc[kRows];
  for (int64_t r = 0; r < kRows; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; k += kCols) {
    const __m256 xv = _mm256_loadu_ps(x + k);
    const uint16_t* group = block + k * kRows;
    for (int64_t r = 0; r < kRows; ++r) {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(group + r * kCols));
      acc[r] = _mm256_fmadd_ps(xv, _mm256_cvtph_ps(h), acc[r]);
    }
  }
  for (int64_t r = 0; r < kRows; ++r) out[r] = lane_sum(acc[r]);
}

at::Tensor half_matvec(const at::Tensor& x, const at::Tensor& packed, const c10::optional<at::Tensor>& bias,
                       int64_t out_features) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous() && x.device().is_cpu(),
              "gsv::half_matvec: x must be a contiguous float32 CPU matrix [R, K]");
  const int64_t R = x.size(0), K = x.size(1), N = out_features;
  TORCH_CHECK(K % kCols == 0, "gsv::half_matvec: K must be a multiple of 8, got ", K);
  TORCH_CHECK(packed.dim() == 4 && packed.scalar_type() == at::kHalf && packed.is_contiguous() &&
                  packed.size(0) == (N + kRows - 1) / kRows && packed.size(1) == K / kCols &&
                  packed.size(2) == kRows && packed.size(3) == kCols,
              "gsv::half_matvec: the weight must come from half_matvec.pack_rows for [N, K] = [", N, ", ", K, "]");
  const float* b = nullptr;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->is_contiguous() && bias->numel() == N,
                "gsv::half_matvec: bias must be a contiguous float32 vector [N]");
    b = bias->data_ptr<float>();
  }
  at::Tensor y = at::empty({R, N}, x.options());
  const float* xp = x.data_ptr<float>();
  const uint16_t* wp = reinterpret_cast<const uint16_t*>(packed.data_ptr<at::Half>());
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, packed.size(0), kGrain, [&](int64_t first, int64_t last) {
    float dots[kRows];
    for (int64_t blk = first; blk < last; ++blk) {
      const int64_t n = blk * kRows, rows = std::min(kRows, N - n);
      for (int64_t r = 0; r < R; ++r) {
        dot_block(xp + r * K, wp + blk * K * kRows, K, dots);
        for (int64_t i = 0; i < rows; ++i) yp[r * N + n + i] = dots[i] + (b != nullptr ? b[n + i] : 0.f);
      }
    }
  });
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
