// CPU kernel of dyrate::decode_attention: one query per sequence against its own keys only. One
// task per (sequence, key head) reads the keys of slots [start, len) once for the whole GQA group
// (logits into a task-local buffer, as attention_scores does), takes the softmax in that buffer,
// then reads the values once per block of keys: a block stays in L1 while every head of the group
// accumulates it. Nothing beyond a sequence's length is read, so a pruned or short row costs only
// its own keys (SDPA with a length mask reads every row to the longest one).
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "../op_checks.h"
#include "attention_math.h"

namespace dyrate::cpu {
namespace {

// Keys per value block: 32 keys of a 128-wide fp32 head are 16 KiB, half of L1.
constexpr int64_t kValueBlock = 32;

// acc[0:D] += sum_j p[j] * v[j] over n value rows of stride `stride`.
template <typename V>
void weighted_values_scalar(const V* v, int64_t stride, int64_t n, const float* p, int64_t D,
                            float* acc) {
  for (int64_t j = 0; j < n; ++j)
    for (int64_t d = 0; d < D; ++d) acc[d] += p[j] * to_float(v[j * stride + d]);
}

#if DYRATE_HAVE_AVX2_PATH
// 32 lanes of the head at a time in 4 registers, every key of the block into them, so that the
// accumulators stay in registers across the block.
template <typename V>
DYRATE_AVX2 void weighted_values_avx2(const V* v, int64_t stride, int64_t n, const float* p,
                                      int64_t D, float* acc) {
  int64_t d = 0;
  for (; d + 32 <= D; d += 32) {
    __m256 a0 = _mm256_loadu_ps(acc + d), a1 = _mm256_loadu_ps(acc + d + 8);
    __m256 a2 = _mm256_loadu_ps(acc + d + 16), a3 = _mm256_loadu_ps(acc + d + 24);
    for (int64_t j = 0; j < n; ++j) {
      const V* row = v + j * stride + d;
      const __m256 w = _mm256_set1_ps(p[j]);
      a0 = _mm256_fmadd_ps(load8(row), w, a0);
      a1 = _mm256_fmadd_ps(load8(row + 8), w, a1);
      a2 = _mm256_fmadd_ps(load8(row + 16), w, a2);
      a3 = _mm256_fmadd_ps(load8(row + 24), w, a3);
    }
    _mm256_storeu_ps(acc + d, a0), _mm256_storeu_ps(acc + d + 8, a1);
    _mm256_storeu_ps(acc + d + 16, a2), _mm256_storeu_ps(acc + d + 24, a3);
  }
  for (; d + 8 <= D; d += 8) {
    __m256 a = _mm256_loadu_ps(acc + d);
    for (int64_t j = 0; j < n; ++j)
      a = _mm256_fmadd_ps(load8(v + j * stride + d), _mm256_set1_ps(p[j]), a);
    _mm256_storeu_ps(acc + d, a);
  }
  if (d < D) weighted_values_scalar(v + d, stride, n, p, D - d, acc + d);
}
#endif

template <typename V>
void weighted_values(const V* v, int64_t stride, int64_t n, const float* p, int64_t D,
                     float* acc) {
#if DYRATE_HAVE_AVX2_PATH
  if (cpu_has_avx2()) return weighted_values_avx2(v, stride, n, p, D, acc);
#endif
  weighted_values_scalar(v, stride, n, p, D, acc);
}

struct Rows {
  int64_t B, H, Hkv, D;
  std::optional<int64_t> window;
  float scale;
};

template <typename T>
void decode_attention_kernel(const Rows& r, const at::Tensor& q, const at::Tensor& k_cache,
                             const at::Tensor& v_cache, const int64_t* lengths, at::Tensor& out) {
  const int64_t G = r.H / r.Hkv, D = r.D;
  const T *q_ptr = q.const_data_ptr<T>(), *k_ptr = k_cache.const_data_ptr<T>();
  const T* v_ptr = v_cache.const_data_ptr<T>();
  T* out_ptr = out.mutable_data_ptr<T>();
  at::parallel_for(0, r.B * r.Hkv, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> logits, query(G * D), acc(G * D), inv(G);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / r.Hkv, kvh = task % r.Hkv, len = lengths[b];
      const int64_t first = r.window ? std::max<int64_t>(0, len - *r.window) : 0, n = len - first;
      for (int64_t g = 0; g < G; ++g)
        for (int64_t d = 0; d < D; ++d)
          query[g * D + d] = to_float(q_ptr[b * q.stride(0) + (kvh * G + g) * q.stride(1) + d]) *
                             r.scale;
      std::fill(acc.begin(), acc.end(), 0.f);
      std::fill(inv.begin(), inv.end(), 0.f);
      if (n > 0) {
        logits.resize(G * n);
        const int64_t kv_offset = b * k_cache.stride(0) + kvh * k_cache.stride(1);
        group_logits(k_ptr + kv_offset + first * k_cache.stride(2), k_cache.stride(2), n,
                     query.data(), G, D, logits.data());
        for (int64_t g = 0; g < G; ++g) inv[g] = 1.f / softmax_numerators(&logits[g * n], n);
        const int64_t v_offset = b * v_cache.stride(0) + kvh * v_cache.stride(1);
        const T* v = v_ptr + v_offset + first * v_cache.stride(2);
        for (int64_t j = 0; j < n; j += kValueBlock) {
          const int64_t block = std::min(kValueBlock, n - j);
          for (int64_t g = 0; g < G; ++g)
            weighted_values(v + j * v_cache.stride(2), v_cache.stride(2), block,
                            &logits[g * n + j], D, &acc[g * D]);
        }
      }
      for (int64_t g = 0; g < G; ++g) {  // a row without keys gets 0, as the reference does
        T* o = out_ptr + (b * r.H + kvh * G + g) * D;
        for (int64_t d = 0; d < D; ++d) o[d] = static_cast<T>(acc[g * D + d] * inv[g]);
      }
    }
  });
}

at::Tensor decode_attention_cpu(const at::Tensor& q, const at::Tensor& k_cache,
                                const at::Tensor& v_cache, const at::Tensor& lengths,
                                std::optional<double> scale, std::optional<int64_t> window) {
  check_decode_attention(q, k_cache, v_cache, lengths, window);
  TORCH_CHECK(q.device().is_cpu(), "dyrate.decode_attention: CPU kernel got ", q.device());
  const int64_t B = q.size(0), H = q.size(1), D = q.size(2), cap = k_cache.size(2);
  const at::Tensor len_c = lengths.contiguous();
  const int64_t* len_p = len_c.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)  // the bound guards memory, so it always runs
    TORCH_CHECK(len_p[b] >= 0 && len_p[b] <= cap, "dyrate.decode_attention: sequence ", b,
                " has length ", len_p[b], ", outside [0, capacity ", cap, "]");
  const float s = static_cast<float>(scale.has_value() ? *scale : 1.0 / std::sqrt(double(D)));
  const Rows rows{B, H, k_cache.size(1), D, window, s};
  at::Tensor out = at::empty({B, H, D}, q.options());
  switch (q.scalar_type()) {
    case at::kFloat:
      decode_attention_kernel<float>(rows, q, k_cache, v_cache, len_p, out);
      break;
    case at::kBFloat16:
      decode_attention_kernel<c10::BFloat16>(rows, q, k_cache, v_cache, len_p, out);
      break;
    default:
      decode_attention_kernel<c10::Half>(rows, q, k_cache, v_cache, len_p, out);
  }
  return out;
}

}  // namespace
}  // namespace dyrate::cpu

TORCH_LIBRARY_IMPL(dyrate, CPU, m) {
  m.impl("decode_attention", &dyrate::cpu::decode_attention_cpu);
}
