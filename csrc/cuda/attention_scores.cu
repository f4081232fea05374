// dyrate::attention_scores on CUDA. Semantics: dyrate_engine/ops/attention_scores.py.
//
// One block per (sequence b, key head, chunk of up to kMaxHeads query heads of that key head), so
// each key is read once per block and serves every query head of its GQA group (a key head is read
// ceil(G / 8) times only when G > 8). The block makes ONE pass over the keys with an online
// softmax: each group of kLanes lanes takes one key at a time and keeps, per query head, a running
// max and four per-type sums in the log2 domain. The logits of the visual span are kept in shared
// memory so that their probabilities can be formed once the softmax normaliser is known; when
// G x min(max_vis, Cap) floats do not fit next to the rest in 48 KB, the visual keys only (not the
// whole cache) are read a second time and their logits recomputed. Nothing of size [B, H, N] goes
// to global memory.
//
// Visual tokens in several spans (vis_slots given): a key's visual rank is found by a binary search
// of the sequence's slot table, so text between the spans counts as instruction.
//
// Bad index values are clamped, never checked (op_checks.h): lengths to [0, Cap], the visual span
// and prompt end to [0, lengths], the reported visual tokens to min(vis_len, max_vis, lengths);
// a listed slot outside [0, lengths) scores 0 when the scores are kept in shared memory
// (vis_width > 0: only keys in [0, lengths) are visited) and is clamped into [0, lengths) when
// they are recomputed. For valid values this equals the reference exactly.
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <climits>
#include <cmath>
#include <optional>
#include <tuple>

#include "../op_checks.h"
#include "attention_scores_math.cuh"
#include "common.cuh"

namespace dyrate {
namespace cuda {
namespace {

using scores::add_fixed;
using scores::dot_key;
using scores::head_prob;
using scores::kFixedOne;
using scores::kLanes;
using scores::online_update;
using scores::visual_rank;

constexpr int kThreads = 256;
constexpr int kGroups = kThreads / kLanes;  // keys in flight per block
static_assert(kGroups == 32, "the block merge maps key group i to lane i of a warp");
constexpr int kMaxHeads = 8;  // query heads per block: 5 floats of state each, in registers
static_assert(kMaxHeads <= kThreads / 32, "the block merge uses one warp per query head");
constexpr size_t kSmemLimit = 48 * 1024;  // no cudaFuncSetAttribute opt-in needed below this
constexpr double kLog2e = 1.4426950408889634;

struct Params {
  const void* q;  // fp32/fp16/bf16 as q_code says, independently of the keys' dtype
  int q_code;
  int64_t q_sb, q_sh;
  const void* k;
  int64_t k_sb, k_sh, k_ss;
  const int64_t *lengths, *vis_start, *vis_len, *prompt_len;
  const int64_t* vis_slots;  // [B, slots_stride], or nullptr for one contiguous span
  int64_t slots_stride;
  unsigned long long* vis_fixed;  // [B, max_vis] scores in fixed point (kFixedOne = 1.0)
  int* nan_rows;                  // [B]: 1 where some contribution was NaN
  float* type_mass;
  int H, G, Hkv, D, n_chunks, vis_width;  // vis_width 0: recompute the visual logits
  int64_t cap, max_vis;
  float q_scale;  // softmax scale x log2(e): logits come out in the log2 domain, for exp2f
  float inv_h;
  bool vec;  // 16-byte key loads are aligned
};

template <typename kT, int GC>
__global__ void __launch_bounds__(kThreads) attention_scores_kernel(Params p) {
  extern __shared__ float4 smem4[];
  float* q_s = reinterpret_cast<float*>(smem4);  // [GC][D], scaled, zero rows for padding heads
  float* st_m = q_s + GC * p.D;                  // [kGroups][GC]
  float* st_s = st_m + kGroups * GC;             // [kGroups][GC][4]
  float* fin_m = st_s + kGroups * GC * 4;        // [GC]
  float* fin_inv = fin_m + GC;                   // [GC]
  float* vis_l = fin_inv + GC;                   // [GC][vis_width]

  const int chunk = blockIdx.x % p.n_chunks;
  const int64_t bk = blockIdx.x / p.n_chunks;
  const int kvh = static_cast<int>(bk % p.Hkv);
  const int64_t b = bk / p.Hkv;
  const int tid = threadIdx.x, lane = tid % kLanes, group = tid / kLanes;
  const int g0 = chunk * GC;                 // first query head of the chunk within the GQA group
  const int n_heads = min(GC, p.G - g0);     // >= 1
  const int64_t h0 = int64_t(kvh) * p.G + g0;  // its global query head

  // With valid values, the type (s >= vs) + (s >= ve) + (s >= pe) of a slot s < len is the
  // reference's; with bad ones every bound still lies in [0, len].
  const int64_t len = min(max(p.lengths[b], int64_t(0)), p.cap);
  const int64_t vs = min(max(p.vis_start[b], int64_t(0)), len);
  const int64_t ve = vs + min(max(p.vis_len[b], int64_t(0)), len - vs);
  const int64_t pe = min(max(p.prompt_len[b], int64_t(0)), len);
  const int64_t* slots = p.vis_slots != nullptr ? p.vis_slots + b * p.slots_stride : nullptr;
  // Reported visual tokens: ranks 0 .. n_vis-1, at slots vs + r (all < len) or slots[r].
  const int64_t n_vis = slots != nullptr
                            ? min(min(max(p.vis_len[b], int64_t(0)), p.max_vis), len)
                            : min(ve - vs, p.max_vis);

  for (int i = tid; i < GC * p.D; i += kThreads) {
    const int g = i / p.D, d = i - g * p.D;
    q_s[i] = g < n_heads
                 ? load_as_float(p.q, p.q_code, b * p.q_sb + (h0 + g) * p.q_sh + d) * p.q_scale
                 : 0.f;
  }
  __syncthreads();

  const kT* kbase = static_cast<const kT*>(p.k) + b * p.k_sb + kvh * p.k_sh;
  float m[GC], acc[GC][4];
#pragma unroll
  for (int g = 0; g < GC; ++g) {
    m[g] = -INFINITY;
#pragma unroll
    for (int u = 0; u < 4; ++u) acc[g][u] = 0.f;
  }
  // The trip count is block-uniform so that whole warps reach the shuffles in dot_key.
  for (int64_t base = 0; base < len; base += kGroups) {
    const int64_t s = base + group;
    const bool active = s < len;
    float x[GC];
    dot_key<kT, GC>(active ? kbase + s * p.k_ss : kbase, active, q_s, p.D, lane, p.vec, x);
    if (active) {
      int t;
      int64_t rank;
      if (slots == nullptr) {
        t = int(s >= vs) + int(s >= ve) + int(s >= pe);
        rank = s - vs;
      } else {
        rank = visual_rank(slots, n_vis, s);
        t = rank >= 0 ? 1 : (s < vs ? 0 : (s < pe ? 2 : 3));
      }
#pragma unroll
      for (int g = 0; g < GC; ++g) online_update(m[g], acc[g], x[g], t);
      if (p.vis_width > 0 && lane == 0 && t == 1 && rank >= 0 && rank < n_vis) {
#pragma unroll
        for (int g = 0; g < GC; ++g) vis_l[g * p.vis_width + rank] = x[g];
      }
    }
  }

  // Merge the kGroups partial states of each head (lanes of a group hold identical copies).
  if (lane == 0) {
#pragma unroll
    for (int g = 0; g < GC; ++g) {
      st_m[group * GC + g] = m[g];
#pragma unroll
      for (int u = 0; u < 4; ++u) st_s[(group * GC + g) * 4 + u] = acc[g][u];
    }
  }
  __syncthreads();
  const int warp = tid / 32, wl = tid % 32;
  if (warp < GC) {
    const int g = warp;
    const float mi = st_m[wl * GC + g];
    const float mx = warp_max(mi);
    const float c = (mx == -INFINITY) ? 0.f : exp2f(mi - mx);  // no keys at all: 0, not NaN
    float sum[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) sum[u] = warp_sum(st_s[(wl * GC + g) * 4 + u] * c);
    if (wl == 0) {
      const float total = sum[0] + sum[1] + sum[2] + sum[3];
      // A head with no keys weighs 0; one whose total is 0 or NaN over real keys (all logits
      // -inf, or a NaN) is NaN, as in the reference and the CPU kernel, so the error shows.
      const float inv = g >= n_heads || len == 0 ? 0.f : total > 0.f ? 1.f / total : NAN;
      if (g < n_heads) {
        float* out = p.type_mass + ((b * p.H) + h0 + g) * 4;
#pragma unroll
        for (int u = 0; u < 4; ++u) out[u] = sum[u] * inv;  // all 0 when lengths == 0
      }
      fin_m[g] = mx;
      fin_inv[g] = inv;
    }
  }
  __syncthreads();

  // Head-mean probability of each reported visual slot. Several blocks (key heads, chunks) add
  // into the same score: in fixed point, whose integer sums do not depend on the order, so the
  // result is the same on every run and exactly tied tokens stay tied (select_keep's ties).
  unsigned long long* vis_out = p.vis_fixed + b * p.max_vis;
  if (p.vis_width > 0) {
    for (int64_t j = tid; j < n_vis; j += kThreads) {
      float sum = 0.f;
#pragma unroll
      for (int g = 0; g < GC; ++g) sum += head_prob(vis_l[g * p.vis_width + j], fin_m[g], fin_inv[g]);
      add_fixed(vis_out + j, p.nan_rows + b, sum * p.inv_h);
    }
  } else {
    for (int64_t base = 0; base < n_vis; base += kGroups) {  // block-uniform, as above
      const int64_t j = base + group;
      const bool active = j < n_vis;
      float x[GC];
      const int64_t slot = !active ? 0
                           : slots != nullptr ? min(max(slots[j], int64_t(0)), len - 1)
                                              : vs + j;
      dot_key<kT, GC>(kbase + slot * p.k_ss, active, q_s, p.D, lane, p.vec, x);
      if (active && lane == 0) {
        float sum = 0.f;
#pragma unroll
        for (int g = 0; g < GC; ++g) sum += head_prob(x[g], fin_m[g], fin_inv[g]);
        add_fixed(vis_out + j, p.nan_rows + b, sum * p.inv_h);
      }
    }
  }
}

template <typename kT, int GC>
void launch(const Params& p, int64_t grid, size_t smem, cudaStream_t stream) {
  attention_scores_kernel<kT, GC><<<static_cast<unsigned>(grid), kThreads, smem, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

size_t state_bytes(int gc, int64_t D) {
  return sizeof(float) * (size_t(gc) * D + size_t(kGroups) * gc * 5 + 2 * size_t(gc));
}

std::tuple<at::Tensor, at::Tensor> attention_scores_cuda(
    const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& lengths,
    const at::Tensor& vis_start, const at::Tensor& vis_len, const at::Tensor& prompt_len,
    std::optional<double> scale, int64_t max_vis, const std::optional<at::Tensor>& vis_slots) {
  check_attention_scores(q, k_cache, lengths, vis_start, vis_len, prompt_len, max_vis, vis_slots);
  c10::cuda::CUDAGuard device_guard(q.device());
  const int64_t B = q.size(0), H = q.size(1), D = q.size(2);
  const int64_t Hkv = k_cache.size(1), cap = k_cache.size(2);
  const auto fopts = q.options().dtype(at::kFloat);
  at::Tensor vis_fixed = at::zeros({B, max_vis}, q.options().dtype(at::kLong));
  at::Tensor nan_rows = at::zeros({B}, q.options().dtype(at::kInt));
  at::Tensor type_mass = at::empty({B, H, 4}, fopts);  // every element written by the kernel
  if (B == 0 || H == 0) return {at::zeros({B, max_vis}, fopts), type_mass};
  TORCH_CHECK(H <= INT_MAX && D <= INT_MAX && cap <= INT_MAX,
              "dyrate.attention_scores: sizes too large for the CUDA kernel");

  const int G = static_cast<int>(H / Hkv);
  int gc = 1;
  while (gc < G && gc < kMaxHeads) gc *= 2;
  while (gc > 1 && state_bytes(gc, D) > kSmemLimit) gc /= 2;
  TORCH_CHECK(state_bytes(gc, D) <= kSmemLimit, "dyrate.attention_scores: head dim ", D,
              " too large for the CUDA kernel");
  size_t smem = state_bytes(gc, D);
  const int64_t vis_cap = std::min(max_vis, cap);  // bound of the visual slots of any sequence
  int vis_width = 0;
  if (vis_cap > 0 && smem + sizeof(float) * gc * vis_cap <= kSmemLimit) {
    vis_width = static_cast<int>(vis_cap);
    smem += sizeof(float) * gc * vis_cap;
  }
  const int n_chunks = (G + gc - 1) / gc;
  const int64_t grid = B * Hkv * n_chunks;
  TORCH_CHECK(grid <= INT_MAX, "dyrate.attention_scores: grid too large");

  const at::Tensor len_c = lengths.contiguous(), vs_c = vis_start.contiguous();
  const at::Tensor vl_c = vis_len.contiguous(), pl_c = prompt_len.contiguous();
  Params p;
  p.q = q.data_ptr();
  p.q_code = float_code(q.scalar_type());
  p.q_sb = q.stride(0), p.q_sh = q.stride(1);
  p.k = k_cache.data_ptr();
  p.k_sb = k_cache.stride(0), p.k_sh = k_cache.stride(1), p.k_ss = k_cache.stride(2);
  p.lengths = len_c.data_ptr<int64_t>(), p.vis_start = vs_c.data_ptr<int64_t>();
  p.vis_len = vl_c.data_ptr<int64_t>(), p.prompt_len = pl_c.data_ptr<int64_t>();
  const bool spans = vis_slots.has_value() && vis_slots->defined();
  const at::Tensor slots_c = spans ? vis_slots->contiguous() : at::Tensor();
  p.vis_slots = spans ? slots_c.data_ptr<int64_t>() : nullptr;
  p.slots_stride = spans ? slots_c.size(1) : 0;
  p.vis_fixed = reinterpret_cast<unsigned long long*>(vis_fixed.data_ptr<int64_t>());
  p.nan_rows = nan_rows.data_ptr<int>(), p.type_mass = type_mass.data_ptr<float>();
  p.H = static_cast<int>(H), p.G = G, p.Hkv = static_cast<int>(Hkv), p.D = static_cast<int>(D);
  p.n_chunks = n_chunks, p.vis_width = vis_width, p.cap = cap, p.max_vis = max_vis;
  const double sc = scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(D));
  p.q_scale = static_cast<float>(sc * kLog2e);
  p.inv_h = 1.f / static_cast<float>(H);
  p.vec = rows_aligned16(k_cache);

  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_float(k_cache.scalar_type(), [&](auto tag) {
    using kT = typename decltype(tag)::type;
    switch (gc) {
      case 1: launch<kT, 1>(p, grid, smem, stream); break;
      case 2: launch<kT, 2>(p, grid, smem, stream); break;
      case 4: launch<kT, 4>(p, grid, smem, stream); break;
      default: launch<kT, 8>(p, grid, smem, stream); break;
    }
  });
  at::Tensor vis_scores = vis_fixed.to(at::kDouble).div_(kFixedOne).to(at::kFloat);
  vis_scores.masked_fill_(nan_rows.unsqueeze(1).to(at::kBool), NAN);
  return {vis_scores, type_mass};
}

}  // namespace
}  // namespace cuda
}  // namespace dyrate

TORCH_LIBRARY_IMPL(dyrate, CUDA, m) {
  m.impl("attention_scores", &dyrate::cuda::attention_scores_cuda);
}
