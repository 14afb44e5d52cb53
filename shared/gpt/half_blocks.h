// The float16 block product shared by our decode kernels (half_matvec.cpp, decode_layers.cpp).
//
// A decode step streams every weight from memory once, so the product is arranged around memory.
// W arrives packed by half_matvec.pack_rows as [ceil(N/8), K/8, 8 rows, 8 columns]: each block of
// 8 output rows is one contiguous run that the CPU's prefetcher streams in order (row-major W
// made 8 interleaved short streams: ~35% slower). Each thread takes whole blocks, widens 8 halves
// at a time with F16C and multiply-adds them into 8-lane float32 accumulators; a block stays in
// L1/L2 while every activation row reuses it. Each output is a sum over lanes (column k goes to
// lane k mod 8) followed by the lane sum, whatever the thread count, so results do not depend on
// how the work is split.
#pragma once

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace gsv {

constexpr int64_t kRows = 8;    // output rows per block
constexpr int64_t kCols = 8;    // columns per packed group (one 8-lane vector)
constexpr int64_t kGrain = 16;  // blocks per thread at least: small products stay on one thread
// How far ahead of its product each thread asks for the weights (_mm_prefetch, bytes): the
// hardware prefetcher alone left a 2-core Xeon at ~19 GB/s of the ~23 that sum() reads; 4 KiB
// ahead cut a decode step by ~15% (docs/performance.md, "Decode against the bandwidth floor";
// 1 KiB helped less, 8 and 16 KiB no more).
constexpr int64_t kPrefetch = 4096;

inline float lane_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// `In` activation rows (x, row stride K) times output rows [o, o + Out) of one packed block:
// out[j][o + i] = x_j . w_{o+i}. Each float16 group is widened once for all `In` rows — with several
// rows (continuous batching) the widening, not the memory, bounds the product — and (Out, In) is
// (8, 1), (4, 2) or (2, 4): 8 accumulators plus the row vectors fit AVX2's 16 registers. Every
// output is the same sum in the same order whatever the tile (lane k mod 8 over k, then the lane
// sum), so a row's values do not depend on the rows beside it.
template <int Out, int In>
inline void dot_tile(const float* x, int64_t K, const uint16_t* block, int o, float out[][kRows]) {
  __m256 acc[In][Out];
  for (int j = 0; j < In; ++j)
    for (int i = 0; i < Out; ++i) acc[j][i] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; k += kCols) {
    const uint16_t* group = block + k * kRows;
    _mm_prefetch(reinterpret_cast<const char*>(group) + kPrefetch, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(group) + kPrefetch + 64, _MM_HINT_T0);
    __m256 xv[In];
    for (int j = 0; j < In; ++j) xv[j] = _mm256_loadu_ps(x + j * K + k);
    for (int i = 0; i < Out; ++i) {
      const __m256 w = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(group + (o + i) * kCols)));
      for (int j = 0; j < In; ++j) acc[j][i] = _mm256_fmadd_ps(xv[j], w, acc[j][i]);
    }
  }
  for (int j = 0; j < In; ++j)
    for (int i = 0; i < Out; ++i) out[j][o + i] = lane_sum(acc[j][i]);
}

// Rows [r, r + In) of x times one packed block: every output row of the block, tile by tile.
template <int In>
inline void dot_rows(const float* x, int64_t K, const uint16_t* block, float out[][kRows]) {
  constexpr int Out = kRows / In;
  for (int o = 0; o < kRows; o += Out) dot_tile<Out, In>(x, K, block, o, out);
}

// Blocks [first, last) of y [R, N] = x [R, K] W^T + b (b may be null), W packed; ReLU applied to the
// outputs when `relu`. Each output is written by whichever thread owns its block, whole.
inline void product_blocks(const float* x, int64_t R, int64_t K, const uint16_t* w, int64_t N, const float* b,
                           float* y, int64_t first, int64_t last, bool relu = false) {
  float dots[4][kRows];
  for (int64_t blk = first; blk < last; ++blk) {
    const int64_t n = blk * kRows, outputs = std::min(kRows, N - n);
    const uint16_t* block = w + blk * K * kRows;
    for (int64_t r = 0; r < R;) {
      const int64_t in = R - r >= 4 ? 4 : R - r >= 2 ? 2 : 1;
      if (in == 4)
        dot_rows<4>(x + r * K, K, block, dots);
      else if (in == 2)
        dot_rows<2>(x + r * K, K, block, dots);
      else
        dot_rows<1>(x + r * K, K, block, dots);
      for (int64_t j = 0; j < in; ++j, ++r)
        for (int64_t i = 0; i < outputs; ++i) {
          const float v = dots[j][i] + (b != nullptr ? b[n + i] : 0.f);
          y[r * N + n + i] = relu ? std::max(v, 0.f) : v;
        }
    }
  }
}

// y [R, N] = x [R, K] W^T + b (b may be null), W packed; on PyTorch's intra-op threads.
inline void half_matvec_into(const float* x, int64_t R, int64_t K, const uint16_t* w, int64_t N, const float* b,
                             float* y) {
  at::parallel_for(0, (N + kRows - 1) / kRows, kGrain,
                   [&](int64_t first, int64_t last) { product_blocks(x, R, K, w, N, b, y, first, last); });
}

}  // namespace gsv
