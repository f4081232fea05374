// dyrate::select_keep on CUDA. Semantics: dyrate_engine/ops/select_keep.py.
//
// One block per row. Each score becomes an order-preserving 32-bit key (order_key: -0.0 == +0.0,
// NaN below -inf), so "the n_keep highest, ties to the lower index" is exact integer selection:
// a most-significant-digit-first radix select (4 rounds of 8 bits, the scheme torch.topk uses)
// finds the key T of the n_keep-th highest present token and how many tokens with key T are kept
// (`want`); a final ordered pass keeps every present token with key > T and the first `want`
// present tokens with key == T in index order (an exclusive block scan). Cost is O(Nv) per row for
// any Nv, with no shared-memory staging: every pass re-reads the row (a few KB, from L2).
// Everything is integer and atomics only count, so the result is deterministic.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <climits>

#include "../op_checks.h"
#include "common.cuh"

namespace dyrate {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kBins = 256;
enum Mode : int { kSelect = 0, kNone = 1, kAll = 2 };

template <typename sT>
__device__ __forceinline__ uint32_t key_at(const sT* scores, int i) {
  return order_key(to_float(scores[i]));
}

template <typename sT>
__global__ void __launch_bounds__(kThreads)
    select_keep_kernel(const sT* __restrict__ scores, const uint8_t* __restrict__ present,
                       const int64_t* __restrict__ n_keep, uint8_t* __restrict__ keep, int nv) {
  __shared__ int hist[kBins];
  __shared__ int scratch[kThreads / 32];
  __shared__ uint32_t s_prefix;
  __shared__ int s_want, s_mode;

  const int64_t row = blockIdx.x;
  const sT* sc = scores + row * nv;
  const uint8_t* pr = present + row * nv;
  uint8_t* out = keep + row * nv;
  const int tid = threadIdx.x, lane = tid & 31;

  // Candidates of a round: present tokens whose key matches `prefix` on the bits in `mask`.
  // Invariant after each round: 1 <= want <= number of candidates.
  uint32_t prefix = 0, mask = 0;
  int want = 0, mode = kSelect;
  for (int round = 0; round < 4; ++round) {
    const int shift = 24 - 8 * round;
    for (int i = tid; i < kBins; i += kThreads) hist[i] = 0;
    __syncthreads();
    for (int base = 0; base < nv; base += kThreads) {  // block-uniform: whole warps below
      const int i = base + tid;
      int bin = kBins;  // no bin
      if (i < nv && pr[i]) {
        const uint32_t key = key_at(sc, i);
        if ((key & mask) == prefix) bin = static_cast<int>((key >> shift) & 0xffu);
      }
      // One shared atomic per distinct bin per warp: tied scores would otherwise serialise.
      const unsigned peers = __match_any_sync(kFullMask, bin);
      if (bin < kBins && lane == __ffs(peers) - 1) atomicAdd(&hist[bin], __popc(peers));
    }
    __syncthreads();
    if (tid < 32) {
      // Lane l holds bins 255-8l down to 248-8l: lanes in order walk the bins from high to low.
      int cnt[8], local = 0;
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        cnt[u] = hist[kBins - 1 - 8 * lane - u];
        local += cnt[u];
      }
      const int incl = warp_inclusive_scan(local);
      const int total = __shfl_sync(kFullMask, incl, 31);  // number of candidates
      int w = want;
      if (round == 0) {  // total = present tokens of the row; clamp n_keep into [0, total]
        const int64_t nk = n_keep[row];
        w = static_cast<int>(nk < 0 ? 0 : (nk > total ? total : nk));
      }
      if (round == 0 && (w == 0 || w == total)) {
        if (lane == 0) s_mode = (w == 0) ? kNone : kAll;
      } else {
        // Exactly one bin has (higher candidates) < w <= (higher candidates) + (its count).
        int above = incl - local;
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          if (above < w && w <= above + cnt[u]) {
            s_prefix = prefix | (static_cast<uint32_t>(kBins - 1 - 8 * lane - u) << shift);
            s_want = w - above;
          }
          above += cnt[u];
        }
        if (lane == 0) s_mode = kSelect;
      }
    }
    __syncthreads();
    // Read before the next round's first barrier; warp 0 rewrites these only after its second.
    mode = s_mode;
    if (mode != kSelect) break;  // block-uniform
    prefix = s_prefix;
    want = s_want;
    mask |= 0xffu << shift;
  }

  // Every element of the row is written: keep is allocated uninitialised.
  int carry = 0;  // present tokens with key == prefix in the earlier tiles
  for (int base = 0; base < nv; base += kThreads) {  // block-uniform: the scan needs every thread
    const int i = base + tid;
    const bool p = i < nv && pr[i];
    bool k = p && mode == kAll;
    if (mode == kSelect) {
      const uint32_t key = p ? key_at(sc, i) : 0u;
      const int eq = (p && key == prefix) ? 1 : 0;
      int n_eq;
      const int before = block_exclusive_scan<kThreads>(eq, scratch, n_eq);
      k = p && (key > prefix || (eq && carry + before < want));
      carry += n_eq;
    }
    if (i < nv) out[i] = k ? 1 : 0;
  }
}

at::Tensor select_keep_cuda(const at::Tensor& scores, const at::Tensor& present,
                            const at::Tensor& n_keep) {
  check_select_keep(scores, present, n_keep);
  c10::cuda::CUDAGuard device_guard(scores.device());
  const int64_t B = scores.size(0), nv = scores.size(1);
  at::Tensor keep = at::empty({B, nv}, present.options());
  if (B == 0 || nv == 0) return keep;  // nothing to write; a zero-sized grid is a launch error
  // nv <= INT_MAX - kThreads: the int tile loops (base += kThreads) must not overflow.
  TORCH_CHECK(B <= INT_MAX && nv <= INT_MAX - kThreads, "dyrate.select_keep: [", B, ", ", nv,
              "] too large for the CUDA kernel");
  const at::Tensor sc = scores.contiguous(), pr = present.contiguous(), nk = n_keep.contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_float(sc.scalar_type(), [&](auto tag) {
    using sT = typename decltype(tag)::type;
    select_keep_kernel<sT><<<static_cast<unsigned>(B), kThreads, 0, stream>>>(
        static_cast<const sT*>(sc.data_ptr()), static_cast<const uint8_t*>(pr.data_ptr()),
        nk.data_ptr<int64_t>(), static_cast<uint8_t*>(keep.data_ptr()), static_cast<int>(nv));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return keep;
}

}  // namespace
}  // namespace cuda
}  // namespace dyrate

TORCH_LIBRARY_IMPL(dyrate, CUDA, m) { m.impl("select_keep", &dyrate::cuda::select_keep_cuda); }
