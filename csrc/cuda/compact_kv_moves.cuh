// The parts of compact_kv_'s two kernels (one span, several spans) that they share: the launch
// parameters, the in-place overlapping move of slots within a row, and the last block's update
// of lengths and present (compact_kv.cu says how the blocks are laid out).
#pragma once
#include <cstdint>

#include "common.cuh"

namespace dyrate {
namespace cuda {
namespace compact {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;  // vectors staged per thread per chunk (16 KB per block at 16 bytes)

struct Params {
  char* kv;
  int64_t row_bytes, cap, rows_per_seq;  // rows_per_seq = L * 2 * Hkv
  int B, Hkv, nv;
  int64_t* lengths;
  const int64_t* vis_start;
  const int64_t* vis_slots;  // [B, nv] for several spans, else nullptr
  uint8_t* present;
  const uint8_t* keep;
  int* counters;  // [>= B], zero between launches
};

// Moves n_pairs slots of one row; map(pair, src, dst) gives the slots, sources increasing with
// pair and dst <= src. All threads call it with the same n_pairs.
template <typename VT, typename Map>
__device__ __forceinline__ void move_slots(VT* row, int V, int64_t n_pairs, const Map& map) {
  const int64_t n_items = n_pairs * V;
  for (int64_t base = 0; base < n_items; base += int64_t(kThreads) * kUnroll) {
    VT buf[kUnroll];
    int64_t dst[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t e = base + int64_t(u) * kThreads + threadIdx.x;
      dst[u] = -1;
      if (e < n_items) {
        const int64_t pair = e / V;
        const int64_t v = e - pair * V;
        int64_t s, d;
        map(pair, s, d);
        buf[u] = row[s * V + v];
        dst[u] = d * V + v;
      }
    }
    __syncthreads();  // every load of the chunk before any store (a destination may be a source)
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (dst[u] >= 0) row[dst[u]] = buf[u];
    }
    __syncthreads();  // not needed by the argument above; keeps chunks plainly sequential
  }
}

// Moves one tile's listed pairs (src[k] -> dst[k], k < n_pairs) in every row of the sequence,
// the rows shared among the blocks along y. All threads call it with the same n_pairs.
template <typename RowPtr>
__device__ __forceinline__ void move_listed_pairs(const RowPtr& row_ptr, int64_t rows, int V,
                                                  int n_pairs, const int* src, const int* dst) {
  if (n_pairs == 0) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    move_slots(row_ptr(r), V, n_pairs, [&](int64_t k, int64_t& s, int64_t& d) {
      s = src[k];
      d = dst[k];
    });
  }
}

// Last block of sequence b: every block of b has read lengths[b] and present[b] (their values
// were consumed before the barrier that precedes the counting); it writes them and resets the
// counter for the next launch.
__device__ __forceinline__ void finish_sequence(const Params& p, int b, int64_t raw_len,
                                                int n_drop, const uint8_t* keep, int& s_last) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    s_last = atomicAdd(p.counters + b, 1) == static_cast<int>(gridDim.y) - 1;
  }
  __syncthreads();
  if (s_last) {
    __threadfence();
    uint8_t* pw = p.present + int64_t(b) * p.nv;
    for (int i = threadIdx.x; i < p.nv; i += kThreads) pw[i] = (pw[i] && keep[i]) ? 1 : 0;
    if (threadIdx.x == 0) {
      p.lengths[b] = raw_len - n_drop;
      p.counters[b] = 0;
    }
  }
}

}  // namespace compact
}  // namespace cuda
}  // namespace dyrate
