// One decode step through every decoder layer of the GPT in a single call (gpt/decode_layers.py
// explains why): per layer, the float16 products of half_blocks.h, the new key/value written into
// the static cache, attention over the cached positions, the residual adds, ReLU and both
// LayerNorms, with no Python, dispatcher or allocation between them.
//
// The arithmetic is the module path's (DecoderLayer in model.py) with float32 accumulation
// throughout; only summation orders differ, as between any two float32 kernels. The cache holds
// float32, or float16 (GSV_GPT_CACHE_DTYPE, lossy): each new key/value rounded to the nearest half
// once, when written, and widened back to float32 on every read (Element below).
#include <torch/extension.h>

#include <linux/futex.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cmath>
#include <tuple>
#include <utility>
#include <vector>

#include "half_blocks.h"

namespace {

constexpr int64_t kPerLayer = 12;  // qkv w/b, out w/b, norm1 w/b, ffn_in w/b, ffn_out w/b, norm2 w/b

struct Layer {
  const uint16_t *qkv, *out, *ffn_in, *ffn_out;
  const float *qkv_b, *out_b, *norm1_w, *norm1_b, *ffn_in_b, *ffn_out_b, *norm2_w, *norm2_b;
};

const uint16_t* packed_weight(const at::Tensor& w, int64_t n, int64_t k, const char* name) {
  TORCH_CHECK(w.scalar_type() == at::kHalf && w.is_contiguous() && w.dim() == 4 &&
                  w.size(0) == (n + gsv::kRows - 1) / gsv::kRows && w.size(1) == k / gsv::kCols &&
                  w.size(2) == gsv::kRows && w.size(3) == gsv::kCols,
              "gsv::decode_layers: ", name, " must come from half_matvec.pack_rows for [", n, ", ", k, "]");
  return reinterpret_cast<const uint16_t*>(w.data_ptr<at::Half>());
}

const float* vector_of(const at::Tensor& v, int64_t n, const char* name) {
  TORCH_CHECK(v.scalar_type() == at::kFloat && v.is_contiguous() && v.numel() == n,
              "gsv::decode_layers: ", name, " must be a contiguous float32 vector of ", n);
  return v.data_ptr<float>();
}

Layer layer_at(at::TensorList w, int64_t l, int64_t d, int64_t ffn) {
  const at::Tensor* t = w.data() + l * kPerLayer;
  return Layer{packed_weight(t[0], 3 * d, d, "qkv"),     packed_weight(t[2], d, d, "out_proj"),
               packed_weight(t[6], ffn, d, "ffn_in"),    packed_weight(t[8], d, ffn, "ffn_out"),
               vector_of(t[1], 3 * d, "qkv bias"),       vector_of(t[3], d, "out_proj bias"),
               vector_of(t[4], d, "norm1 weight"),       vector_of(t[5], d, "norm1 bias"),
               vector_of(t[7], ffn, "ffn_in bias"),      vector_of(t[9], d, "ffn_out bias"),
               vector_of(t[10], d, "norm2 weight"),      vector_of(t[11], d, "norm2 bias")};
}

// out = LayerNorm(a + b) over d features; a and out may alias. Moments in double: d is small,
// and the result is then as close to exact as float32 allows.
void add_layer_norm(const float* a, const float* b, const float* w, const float* bias, int64_t d, double eps,
                    float* out) {
  double sum = 0, sq = 0;
  for (int64_t i = 0; i < d; ++i) {
    const float v = a[i] + b[i];
    out[i] = v;
    sum += v;
  }
  const double mean = sum / d;
  for (int64_t i = 0; i < d; ++i) sq += (out[i] - mean) * (out[i] - mean);
  const float scale = static_cast<float>(1.0 / std::sqrt(sq / d + eps));
  const float shift = static_cast<float>(mean);
  for (int64_t i = 0; i < d; ++i) out[i] = (out[i] - shift) * scale * w[i] + bias[i];
}

// How far ahead of its reads attention asks for cached keys and values (bytes): like the products'
// weights (half_blocks.h, kPrefetch), each head's rows are one contiguous run that the hardware
// prefetcher alone streams below memory speed.
constexpr int64_t kCacheAhead = 2048;

inline void prefetch_run(const void* first, int64_t bytes, int hint) {
  const char* p = reinterpret_cast<const char*>(first);
  for (int64_t b = 0; b < bytes; b += 64) {
    if (hint == _MM_HINT_T0)
      _mm_prefetch(p + b, _MM_HINT_T0);
    else
      _mm_prefetch(p + b, _MM_HINT_T1);
  }
}

// The two formats of a cache element: float32 as is, or float16 (IEEE half bits). A float16 cache
// halves what attention reads per position (docs/performance.md, "A float16 KV cache"); its values
// are rounded to nearest even when written (as torch's .half()) and every sum stays float32.
template <typename T>
struct Element;

template <>
struct Element<float> {
  static __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
  static void store(const float* from, int64_t n, float* to) { std::copy_n(from, n, to); }
};

template <>
struct Element<uint16_t> {
  static __m256 load8(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static void store(const float* from, int64_t n, uint16_t* to) {  // n: a multiple of 8 (check_fits)
    for (int64_t i = 0; i < n; i += 8)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(to + i),
                       _mm256_cvtps_ph(_mm256_loadu_ps(from + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
};

// The lane sums of eight 8-lane vectors, lane p of the result being a[p]'s: each added in
// lane_sum's order ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), so a score here has the
// same bits as one summed alone, without a horizontal sum per vector. The pairs combined at each
// step are chosen so that the last step leaves the sums in position order.
inline __m256 lane_sums(const __m256 a[8]) {
  const auto halves = [](__m256 x, __m256 y) {  // [x lo + x hi | y lo + y hi]
    return _mm256_add_ps(_mm256_permute2f128_ps(x, y, 0x20), _mm256_permute2f128_ps(x, y, 0x31));
  };
  const __m256 s04 = halves(a[0], a[4]), s15 = halves(a[1], a[5]), s26 = halves(a[2], a[6]), s37 = halves(a[3], a[7]);
  // [t0 t0' t1 t1' | t4 t4' t5 t5'] with t = s0 + s2, t' = s1 + s3 of each vector
  const __m256 t0145 = _mm256_add_ps(_mm256_shuffle_ps(s04, s15, _MM_SHUFFLE(1, 0, 1, 0)),
                                     _mm256_shuffle_ps(s04, s15, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m256 t2367 = _mm256_add_ps(_mm256_shuffle_ps(s26, s37, _MM_SHUFFLE(1, 0, 1, 0)),
                                     _mm256_shuffle_ps(s26, s37, _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm256_add_ps(_mm256_shuffle_ps(t0145, t2367, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm256_shuffle_ps(t0145, t2367, _MM_SHUFFLE(3, 1, 3, 1)));
}

inline float lane_max(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
}

// One query row of one head over `length` cached keys/values [length, hd]: softmax(q K^T / sqrt(hd)) V.
// hd is a multiple of 8 (checked by the caller): one 8-lane vector per 8 features. Scores are taken
// 8 positions at a time and summed together (lane_sums); while scoring, the keys ahead are fetched
// into L1 and the values of the same positions into L2 for the last pass. Every score, exponential
// and value sum is the same float32 arithmetic in the same order as one position at a time.
template <typename T>
void attend(const float* q, const T* keys, const T* values, int64_t length, int64_t hd, float* scores, float* out) {
  using E = Element<T>;
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));
  const int64_t lanes = hd / gsv::kCols, row_bytes = hd * static_cast<int64_t>(sizeof(T));
  prefetch_run(keys, std::min(kCacheAhead, length * row_bytes), _MM_HINT_T0);
  __m256 top8 = _mm256_set1_ps(-INFINITY);
  int64_t j = 0;
  for (; j + 8 <= length; j += 8) {
    const T* k = keys + j * hd;
    prefetch_run(k + kCacheAhead / sizeof(T), 8 * row_bytes, _MM_HINT_T0);
    prefetch_run(values + j * hd, 8 * row_bytes, _MM_HINT_T1);
    __m256 acc[8];
    for (int p = 0; p < 8; ++p) acc[p] = _mm256_setzero_ps();
    for (int64_t i = 0; i < lanes; ++i) {
      const __m256 qi = _mm256_loadu_ps(q + 8 * i);
      for (int p = 0; p < 8; ++p) acc[p] = _mm256_fmadd_ps(qi, E::load8(k + p * hd + 8 * i), acc[p]);
    }
    const __m256 s = _mm256_mul_ps(lane_sums(acc), _mm256_set1_ps(scale));
    _mm256_storeu_ps(scores + j, s);
    top8 = _mm256_max_ps(top8, s);
  }
  float top = lane_max(top8);
  for (; j < length; ++j) {
    const T* k = keys + j * hd;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < lanes; ++i) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * i), E::load8(k + 8 * i), acc);
    scores[j] = gsv::lane_sum(acc) * scale;
    top = std::max(top, scores[j]);
  }
  float total = 0.f;
  for (j = 0; j < length; ++j) total += (scores[j] = std::exp(scores[j] - top));
  constexpr int64_t kMaxLanes = 16;  // head_dim <= 128
  __m256 acc[kMaxLanes];
  for (int64_t i = 0; i < lanes; ++i) acc[i] = _mm256_setzero_ps();
  for (j = 0; j < length; ++j) {
    const __m256 p = _mm256_set1_ps(scores[j]);
    const T* v = values + j * hd;
    for (int64_t i = 0; i < lanes; ++i) acc[i] = _mm256_fmadd_ps(p, E::load8(v + 8 * i), acc[i]);
  }
  const __m256 inverse = _mm256_set1_ps(1.f / total);
  for (int64_t i = 0; i < lanes; ++i) _mm256_storeu_ps(out + 8 * i, _mm256_mul_ps(acc[i], inverse));
}

// The threads of one step meet here between its phases (products, attention). A step used to open
// one OpenMP region per phase, 5 per layer: ~120 per token, and under OMP_WAIT_POLICY=PASSIVE (our
// graphs) every region woke the sleeping pool threads through the kernel (docs/performance.md,
// "Decode against the bandwidth floor"). Now a step is one region; its phases are separated by this
// barrier. A phase lasts tens of microseconds and the threads of an idle machine arrive within a
// few of each other, so a waiter first spins briefly; past that its partner has been descheduled
// (in a graph the vocoder's threads share the cores), and the waiter sleeps in the kernel until the
// last thread arrives: spinning or yielding there took the very core the late thread or the
// vocoder needed (docs/performance.md, "Decode threads that sleep at their barrier").
class SpinBarrier {
 public:
  void wait(int threads) {
    if (threads == 1) return;
    const int generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == threads - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_seq_cst);
      if (sleepers_.load(std::memory_order_seq_cst) > 0) futex(FUTEX_WAKE_PRIVATE, INT_MAX);
      return;
    }
    for (int spins = 0; spins < kSpins; ++spins) {
      if (generation_.load(std::memory_order_acquire) != generation) return;
      _mm_pause();
    }
    // Announce the sleep before the last look: the releaser either sees us and wakes us, or bumped
    // the generation before that look (both seq_cst), and FUTEX_WAIT returns at once if it changed.
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    while (generation_.load(std::memory_order_seq_cst) == generation) futex(FUTEX_WAIT_PRIVATE, generation);
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
  }

 private:
  long futex(int op, int value) {
    static_assert(sizeof(std::atomic<int>) == sizeof(int), "the futex word is the atomic's int");
    return syscall(SYS_futex, reinterpret_cast<int*>(&generation_), op, value, nullptr, nullptr, 0);
  }

  static constexpr int kSpins = 2000;  // ~10-100 us of pause instructions (the CPU's pause latency), then sleep
  std::atomic<int> arrived_{0}, generation_{0}, sleepers_{0};
};

// The share [first, last) of `total` items that thread `t` of `threads` takes: contiguous, even.
inline std::pair<int64_t, int64_t> share(int64_t total, int t, int threads) {
  return {total * t / threads, total * (t + 1) / threads};
}

// Where one row's keys and values live: [n_layer, heads, max_len, head_dim] with `layer_stride`
// elements between layers (a row of a batch cache, or a single-row cache of its own), and the
// position its new key/value goes to. Rows of one step may have different lengths, not formats.
template <typename T>
struct RowCache {
  T *k, *v;
  int64_t layer_stride, max_len, position;
};

void check_operands(const at::Tensor& x_in, at::TensorList weights) {
  TORCH_CHECK(x_in.dim() == 2 && x_in.scalar_type() == at::kFloat && x_in.is_contiguous() && x_in.device().is_cpu(),
              "gsv::decode_layers: x must be a contiguous float32 CPU matrix [rows, d]");
  TORCH_CHECK(!weights.empty() && weights.size() % kPerLayer == 0,
              "gsv::decode_layers: expected ", kPerLayer, " tensors per layer, got ", weights.size());
}

void check_cache(const at::Tensor& k_cache, const at::Tensor& v_cache) {
  const auto format = k_cache.scalar_type();
  TORCH_CHECK(k_cache.dim() == 5 && (format == at::kFloat || format == at::kHalf) && k_cache.is_contiguous() &&
                  v_cache.sizes() == k_cache.sizes() && v_cache.scalar_type() == format && v_cache.is_contiguous(),
              "gsv::decode_layers: the caches must be contiguous float32 (or both float16) "
              "[n_layer, batch, heads, max_len, head_dim]");
}

// A cache tensor's elements as the kernel reads them (check_cache has checked the format).
template <typename T>
T* elements(const at::Tensor& cache);

template <>
float* elements<float>(const at::Tensor& cache) {
  return cache.data_ptr<float>();
}

template <>
uint16_t* elements<uint16_t>(const at::Tensor& cache) {
  return reinterpret_cast<uint16_t*>(cache.data_ptr<at::Half>());
}

void check_fits(const at::Tensor& k_cache, int64_t n_layer, int64_t rows, int64_t d, int64_t position) {
  const int64_t H = k_cache.size(2), max_len = k_cache.size(3), hd = k_cache.size(4);
  TORCH_CHECK(k_cache.size(0) >= n_layer && k_cache.size(1) >= rows && H * hd == d && hd % gsv::kCols == 0 && hd <= 128,
              "gsv::decode_layers: cache ", k_cache.sizes(), " does not fit ", n_layer, " layers of ", rows, " rows of ", d);
  TORCH_CHECK(position >= 0 && position < max_len, "gsv::decode_layers: position ", position, " outside the cache (",
              max_len, ")");
}

// The step itself: x [R, d] -> [R, d] through every layer, row r's key/value written at its own
// position and attended over its own length. Each row's arithmetic is the same whatever the other
// rows are (products per row in a fixed order, attention and LayerNorms per row), so a row decodes
// the same values in a batch as alone: what continuous batching (batching.py) relies on.
// With a `head` (the logits projection, packed, no bias) the step ends with it: logits [R, vocab]
// instead of x, in the same parallel region (each thread multiplies its own copy of the final x by
// its share of the head's blocks, as half_matvec would: the same sums), which spares the graphs'
// sleeping pool threads a second wake-up per token.
struct Head {
  const uint16_t* w = nullptr;
  int64_t vocab = 0;
};

Head head_of(const c10::optional<at::Tensor>& head, int64_t vocab, int64_t d) {
  if (!head.has_value() || !head->defined()) return {};
  TORCH_CHECK(vocab > 0, "gsv::decode_layers: a head needs its vocabulary size, got ", vocab);
  return {packed_weight(*head, vocab, d, "head"), vocab};
}

template <typename T>
at::Tensor step(const at::Tensor& x_in, at::TensorList weights, const std::vector<RowCache<T>>& caches, int64_t H,
                int64_t hd, double eps, Head head) {
  const int64_t n_layer = weights.size() / kPerLayer, R = x_in.size(0), d = x_in.size(1);
  const int64_t ffn_dim = weights[6].size(0) * gsv::kRows;  // the ffn_in bias check refuses a width that is not a multiple of 8
  std::vector<Layer> layers;
  for (int64_t l = 0; l < n_layer; ++l) layers.push_back(layer_at(weights, l, d, ffn_dim));
  int64_t longest = 0;
  for (const RowCache<T>& c : caches) longest = std::max(longest, c.position + 1);

  at::Tensor x = head.w != nullptr ? at::empty({R, head.vocab}, x_in.options()) : at::empty_like(x_in);
  const int requested = at::in_parallel_region() ? 1 : std::max(1, at::get_num_threads());
  std::vector<float> qkv(R * 3 * d), attended(R * d), projected(R * d), hidden(R * ffn_dim), scores(R * H * longest);
  std::vector<float> rows(static_cast<size_t>(requested) * R * d);  // each thread's copy of x (the LayerNorms run on every thread)
  const float* x0 = x_in.data_ptr<float>();
  float* xp = x.data_ptr<float>();
  const int64_t qkv_blocks = (3 * d + gsv::kRows - 1) / gsv::kRows, d_blocks = (d + gsv::kRows - 1) / gsv::kRows,
                ffn_blocks = (ffn_dim + gsv::kRows - 1) / gsv::kRows;
  SpinBarrier barrier;

  // One parallel region for the whole step. Every product's output rows are split between the
  // threads by whole blocks and each output is one thread's sum in a fixed order, so results do
  // not depend on the thread count; the LayerNorms (d values) run on every thread, on its own copy
  // of x, the same arithmetic giving the same values.
#pragma omp parallel num_threads(requested)
  {
    const int t = omp_get_thread_num(), threads = omp_get_num_threads();
    float* xt = rows.data() + static_cast<size_t>(t) * R * d;
    std::copy_n(x0, R * d, xt);
    for (int64_t l = 0; l < n_layer; ++l) {
      const Layer& p = layers[l];
      auto [first, last] = share(qkv_blocks, t, threads);
      gsv::product_blocks(xt, R, d, p.qkv, 3 * d, p.qkv_b, qkv.data(), first, last);
      barrier.wait(threads);
      std::tie(first, last) = share(R * H, t, threads);
      for (int64_t task = first; task < last; ++task) {
        const int64_t r = task / H, h = task % H;
        const RowCache<T>& c = caches[r];
        T* keys = c.k + l * c.layer_stride + h * c.max_len * hd;
        T* values = c.v + l * c.layer_stride + h * c.max_len * hd;
        Element<T>::store(qkv.data() + r * 3 * d + d + h * hd, hd, keys + c.position * hd);
        Element<T>::store(qkv.data() + r * 3 * d + 2 * d + h * hd, hd, values + c.position * hd);
        attend(qkv.data() + r * 3 * d + h * hd, keys, values, c.position + 1, hd, scores.data() + task * longest,
               attended.data() + r * d + h * hd);
      }
      barrier.wait(threads);
      std::tie(first, last) = share(d_blocks, t, threads);
      gsv::product_blocks(attended.data(), R, d, p.out, d, p.out_b, projected.data(), first, last);
      barrier.wait(threads);
      for (int64_t r = 0; r < R; ++r)
        add_layer_norm(xt + r * d, projected.data() + r * d, p.norm1_w, p.norm1_b, d, eps, xt + r * d);
      std::tie(first, last) = share(ffn_blocks, t, threads);
      gsv::product_blocks(xt, R, d, p.ffn_in, ffn_dim, p.ffn_in_b, hidden.data(), first, last, /*relu=*/true);
      barrier.wait(threads);
      std::tie(first, last) = share(d_blocks, t, threads);
      gsv::product_blocks(hidden.data(), R, ffn_dim, p.ffn_out, d, p.ffn_out_b, projected.data(), first, last);
      barrier.wait(threads);
      for (int64_t r = 0; r < R; ++r)
        add_layer_norm(xt + r * d, projected.data() + r * d, p.norm2_w, p.norm2_b, d, eps, xt + r * d);
    }
    if (head.w != nullptr) {
      auto [first, last] = share((head.vocab + gsv::kRows - 1) / gsv::kRows, t, threads);
      gsv::product_blocks(xt, R, d, head.w, head.vocab, nullptr, xp, first, last);
    } else if (t == 0) {
      std::copy_n(xt, R * d, xp);
    }
  }
  return x;
}

// A batch sharing one cache [n_layer, batch, heads, max_len, head_dim] and one position.
template <typename T>
std::vector<RowCache<T>> batch_rows(const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t R,
                                    int64_t position) {
  const int64_t H = k_cache.size(2), max_len = k_cache.size(3), hd = k_cache.size(4);
  const int64_t row_stride = H * max_len * hd, layer_stride = k_cache.size(1) * row_stride;
  std::vector<RowCache<T>> caches;
  for (int64_t r = 0; r < R; ++r)
    caches.push_back({elements<T>(k_cache) + r * row_stride, elements<T>(v_cache) + r * row_stride, layer_stride,
                      max_len, position});
  return caches;
}

at::Tensor decode_layers(const at::Tensor& x_in, at::TensorList weights, at::Tensor& k_cache, at::Tensor& v_cache,
                         int64_t position, double eps, const c10::optional<at::Tensor>& head, int64_t vocab) {
  check_operands(x_in, weights);
  check_cache(k_cache, v_cache);
  const int64_t n_layer = weights.size() / kPerLayer, R = x_in.size(0), d = x_in.size(1);
  check_fits(k_cache, n_layer, R, d, position);
  const int64_t H = k_cache.size(2), hd = k_cache.size(4);
  const Head h = head_of(head, vocab, d);
  if (k_cache.scalar_type() == at::kHalf)
    return step(x_in, weights, batch_rows<uint16_t>(k_cache, v_cache, R, position), H, hd, eps, h);
  return step(x_in, weights, batch_rows<float>(k_cache, v_cache, R, position), H, hd, eps, h);
}

// Rows of different utterances, each with a single-row cache of its own and its own position.
template <typename T>
std::vector<RowCache<T>> own_rows(at::TensorList k_caches, at::TensorList v_caches, at::IntArrayRef positions) {
  std::vector<RowCache<T>> caches;
  for (size_t r = 0; r < k_caches.size(); ++r) {
    const at::Tensor& k = k_caches[r];
    caches.push_back({elements<T>(k), elements<T>(v_caches[r]), k.size(1) * k.size(2) * k.size(3) * k.size(4),
                      k.size(3), positions[r]});
  }
  return caches;
}

at::Tensor decode_rows(const at::Tensor& x_in, at::TensorList weights, at::TensorList k_caches, at::TensorList v_caches,
                       at::IntArrayRef positions, double eps, const c10::optional<at::Tensor>& head, int64_t vocab) {
  check_operands(x_in, weights);
  const int64_t n_layer = weights.size() / kPerLayer, R = x_in.size(0), d = x_in.size(1);
  TORCH_CHECK(static_cast<int64_t>(k_caches.size()) == R && static_cast<int64_t>(v_caches.size()) == R &&
                  static_cast<int64_t>(positions.size()) == R,
              "gsv::decode_rows: one key cache, value cache and position per row of x");
  TORCH_CHECK(R > 0, "gsv::decode_rows: no rows");
  const int64_t H = k_caches[0].size(2), hd = k_caches[0].size(4);
  const auto format = k_caches[0].scalar_type();
  for (int64_t r = 0; r < R; ++r) {
    check_cache(k_caches[r], v_caches[r]);
    check_fits(k_caches[r], n_layer, 1, d, positions[r]);
    TORCH_CHECK(k_caches[r].size(2) == H && k_caches[r].size(4) == hd, "gsv::decode_rows: rows of different widths");
    TORCH_CHECK(k_caches[r].scalar_type() == format, "gsv::decode_rows: rows of different cache dtypes");
  }
  const Head h = head_of(head, vocab, d);
  if (format == at::kHalf) return step(x_in, weights, own_rows<uint16_t>(k_caches, v_caches, positions), H, hd, eps, h);
  return step(x_in, weights, own_rows<float>(k_caches, v_caches, positions), H, hd, eps, h);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(gsv, m) {
  m.def("decode_layers(Tensor x, Tensor[] weights, Tensor(a!) k_cache, Tensor(b!) v_cache, int position, float eps, Tensor? head=None, int vocab=0) -> Tensor");
  m.def("decode_rows(Tensor x, Tensor[] weights, Tensor(a!)[] k_caches, Tensor(b!)[] v_caches, int[] positions, float eps, Tensor? head=None, int vocab=0) -> Tensor");
}

TORCH_LIBRARY_IMPL(gsv, CPU, m) {
  m.impl("decode_layers", &decode_layers);
  m.impl("decode_rows", &decode_rows);
}
