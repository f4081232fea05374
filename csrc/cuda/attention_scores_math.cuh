// The per-key math of attention_scores' one-pass kernel (attention_scores.cu says how the block
// is laid out): one key's logits for a chunk of query heads, the online-softmax update of the
// per-type sums, a visual token's probability once the normaliser is known and its order-free
// sum over blocks, and a slot's visual rank when the visual tokens sit in several spans.
#pragma once
#include <cmath>
#include <cstring>

#include "common.cuh"

namespace dyrate {
namespace cuda {
namespace scores {

constexpr int kLanes = 8;  // lanes sharing one key's dot product

// Scaled logits of one key for the GC query heads; every lane of the group gets the full sums.
// Called by all lanes of the warp (the shuffles use the full mask); inactive groups load nothing.
template <typename kT, int GC>
__device__ __forceinline__ void dot_key(const kT* krow, bool active, const float* q_s, int D,
                                        int lane, bool vec, float (&x)[GC]) {
#pragma unroll
  for (int g = 0; g < GC; ++g) x[g] = 0.f;
  if (active) {
    if (vec) {
      constexpr int E = 16 / sizeof(kT);  // elements per 16-byte load; D % E == 0 here
      const int n_vec = D / E;
      for (int v = lane; v < n_vec; v += kLanes) {
        const uint4 raw = __ldg(reinterpret_cast<const uint4*>(krow) + v);
        kT kv[E];
        memcpy(kv, &raw, sizeof(raw));
#pragma unroll
        for (int g = 0; g < GC; ++g) {
          // D % 4 == 0 and the shared base is 16-byte aligned, so these float4 reads are too.
          const float4* qv = reinterpret_cast<const float4*>(q_s + g * D + v * E);
#pragma unroll
          for (int e = 0; e < E / 4; ++e) {
            const float4 qq = qv[e];
            x[g] += qq.x * to_float(kv[4 * e]) + qq.y * to_float(kv[4 * e + 1]) +
                    qq.z * to_float(kv[4 * e + 2]) + qq.w * to_float(kv[4 * e + 3]);
          }
        }
      }
    } else {
      for (int d = lane; d < D; d += kLanes) {
        const float kf = to_float(krow[d]);
#pragma unroll
        for (int g = 0; g < GC; ++g) x[g] += q_s[g * D + d] * kf;
      }
    }
  }
#pragma unroll
  for (int g = 0; g < GC; ++g) x[g] = group_sum<kLanes>(x[g]);
}

// Online softmax step. m starts at -inf: exp2f(-inf - x) = 0 scales the (empty) sums, and a -inf
// logit adds 0 instead of exp2f(-inf - -inf) = NaN. A NaN or +inf logit gives NaN, as softmax does.
__device__ __forceinline__ void online_update(float& m, float (&acc)[4], float x, int t) {
  if (x > m) {
    const float c = exp2f(m - x);
#pragma unroll
    for (int u = 0; u < 4; ++u) acc[u] *= c;
    m = x;
  }
  const float p = (x == -INFINITY) ? 0.f : exp2f(x - m);
#pragma unroll
  for (int u = 0; u < 4; ++u) acc[u] += (u == t) ? p : 0.f;  // constant indices keep acc in registers
}

// inv == 0 marks a head without probability mass (no keys, or a padding head of the chunk).
__device__ __forceinline__ float head_prob(float logit, float m, float inv) {
  return inv == 0.f ? 0.f : exp2f(logit - m) * inv;  // NaN inv (a degenerate head) stays NaN
}

constexpr double kFixedOne = 1099511627776.0;  // 2^40: scores in [0, 1] to ~1e-12

// Adds x to a visual token's score in fixed point: integer sums do not depend on the order in
// which blocks add, so the result has the same bits on every run and exact ties stay tied. A NaN
// marks the row instead (the host turns the row to NaN).
__device__ __forceinline__ void add_fixed(unsigned long long* out, int* nan_row, float x) {
  if (isnan(x)) {
    *nan_row = 1;  // every writer stores the same value
    return;
  }
  atomicAdd(out, static_cast<unsigned long long>(__double2ll_rn(double(x) * kFixedOne)));
}

// Rank of slot s in the ascending table slots[0, n), or -1 when s is not a visual slot.
__device__ __forceinline__ int64_t visual_rank(const int64_t* slots, int64_t n, int64_t s) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = (lo + hi) >> 1;
    if (slots[mid] < s) lo = mid + 1;
    else hi = mid;
  }
  return (lo < n && slots[lo] == s) ? lo : -1;
}

}  // namespace scores
}  // namespace cuda
}  // namespace dyrate
