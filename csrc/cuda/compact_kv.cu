// dyrate::compact_kv_ on CUDA. Semantics: dyrate_engine/ops/compact_kv.py.
//
// Grid (B, R): block (b, y) moves rows y, y + R, ... of the L*2*Hkv rows [Cap, D] of sequence b,
// so each (sequence, row) belongs to exactly one block and blocks never share kv memory.
// Moves inside a row are in place and overlapping. Every move goes left (destination <= source)
// and a row's moves are done in increasing source order, in chunks: the whole chunk is loaded into
// registers, a barrier, then stored. A store of a chunk lands at or below that chunk's sources, so
// it never clobbers a source of a later chunk, and the barrier covers overlap within the chunk.
//
// The slot plan is walked in tiles of 256 visual tokens: a block scan of (present, kept) gives the
// source slot vis_start + (present rank) and the destination vis_start + (kept rank) of each kept
// token; the tokens that actually move form the tile's pair list in shared memory. After the
// visual span, every slot up to lengths[b] moves left by the number dropped.
//
// lengths and present are updated in the same launch (docs/DESIGN.md: a pruning event costs at most
// two launches): the blocks of sequence b count themselves on counters[b]; the last one, when all
// of them have read lengths[b] and present[b] (a block reads metadata of its own b only), writes
// them and resets the counter to 0 for the next launch on the stream.
//
// Bad values are clamped, never checked (op_checks.h): lengths to [0, Cap], vis_start to
// [0, lengths]; kept = keep_mask & present; the visual span ends at min(vis_start + n_present,
// lengths) and only present tokens below lengths count as dropped.
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <map>
#include <mutex>
#include <utility>

#include "../op_checks.h"
#include "common.cuh"

namespace dyrate {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;  // vectors staged per thread per chunk (16 KB per block at 16 bytes)

struct Params {
  char* kv;
  int64_t row_bytes, cap, rows_per_seq;  // rows_per_seq = L * 2 * Hkv
  int B, Hkv, nv;
  int64_t* lengths;
  const int64_t* vis_start;
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

template <typename VT>
__global__ void __launch_bounds__(kThreads) compact_kv_kernel(Params p) {
  __shared__ int s_src[kThreads], s_dst[kThreads];  // moving pairs of the current tile
  __shared__ int scratch[kThreads / 32];
  __shared__ int s_last;

  const int b = blockIdx.x;
  const int tid = threadIdx.x;
  const int V = static_cast<int>(p.row_bytes / int64_t(sizeof(VT)));
  const int64_t raw_len = p.lengths[b];
  const int64_t len = min(max(raw_len, int64_t(0)), p.cap);
  const int64_t vs = min(max(p.vis_start[b], int64_t(0)), len);
  // Plain (not read-only cached) loads: the last block rewrites present in this kernel.
  const uint8_t* pres = p.present + int64_t(b) * p.nv;
  const uint8_t* keep = p.keep + int64_t(b) * p.nv;

  auto row_ptr = [&](int64_t r) {  // row r of sequence b: r = (l * 2 + kv) * Hkv + h
    const int64_t lk = r / p.Hkv, h = r - lk * p.Hkv;
    return reinterpret_cast<VT*>(p.kv + ((lk * p.B + b) * p.Hkv + h) * p.cap * p.row_bytes);
  };

  int n_present = 0, n_kept = 0, n_drop = 0;  // over the earlier tiles
  for (int base = 0; base < p.nv; base += kThreads) {  // block-uniform: scans need every thread
    const int i = base + tid;
    const int pr = (i < p.nv && pres[i]) ? 1 : 0;
    const int kp = (pr && keep[i]) ? 1 : 0;
    int tot;  // two 16-bit counts in one scan: at most kThreads each
    const int before = block_exclusive_scan<kThreads>(pr | (kp << 16), scratch, tot);
    const int64_t src = vs + n_present + (before & 0xffff);
    const int64_t dst = vs + n_kept + (before >> 16);
    const bool in_cache = pr && src < len;  // then so is every earlier present token
    const int mv = (in_cache && kp && dst != src) ? 1 : 0;  // dst == src before the first drop
    const int dr = (in_cache && !kp) ? 1 : 0;
    int tot2;
    const int at = block_exclusive_scan<kThreads>(mv | (dr << 16), scratch, tot2);
    if (mv) {
      s_src[at & 0xffff] = static_cast<int>(src);
      s_dst[at & 0xffff] = static_cast<int>(dst);
    }
    n_present += tot & 0xffff;
    n_kept += tot >> 16;
    n_drop += tot2 >> 16;
    const int n_pairs = tot2 & 0xffff;
    __syncthreads();  // the pair list is complete
    if (n_pairs > 0) {
      for (int64_t r = blockIdx.y; r < p.rows_per_seq; r += gridDim.y) {
        move_slots(row_ptr(r), V, n_pairs, [&](int64_t k, int64_t& s, int64_t& d) {
          s = s_src[k];
          d = s_dst[k];
        });
      }
    }
    __syncthreads();  // the pair list is read before the next tile rewrites it
  }

  const int64_t ve = min(vs + n_present, len);  // end of the visual span in the cache
  if (n_drop > 0 && ve < len) {
    for (int64_t r = blockIdx.y; r < p.rows_per_seq; r += gridDim.y) {
      move_slots(row_ptr(r), V, len - ve, [&](int64_t k, int64_t& s, int64_t& d) {
        s = ve + k;
        d = ve + k - n_drop;
      });
    }
  }

  // Last block of sequence b: every block of b has read lengths[b] and present[b] (their values
  // were consumed before the barrier that precedes the counting).
  __syncthreads();
  if (tid == 0) {
    __threadfence();
    s_last = atomicAdd(p.counters + b, 1) == static_cast<int>(gridDim.y) - 1;
  }
  __syncthreads();
  if (s_last) {
    __threadfence();
    uint8_t* pw = p.present + int64_t(b) * p.nv;
    for (int i = tid; i < p.nv; i += kThreads) pw[i] = (pw[i] && keep[i]) ? 1 : 0;
    if (tid == 0) {
      p.lengths[b] = raw_len - n_drop;
      p.counters[b] = 0;
    }
  }
}

// Counters for the last-block pattern, cached per (device, stream) and zeroed once: each launch
// leaves them at 0, so launches on one stream (which run in order) can share them, but two
// compactions running concurrently on different streams must not count on the same ints. Grown
// (never shrunk) when B exceeds the cached size; the old buffer goes back to the caching
// allocator, which reuses it only in stream order. The map is never destroyed: freeing CUDA
// memory during static destruction can run after the CUDA runtime has shut down.
at::Tensor counters_for(const at::Tensor& like, int64_t B, const c10::cuda::CUDAStream& stream) {
  static std::mutex mutex;
  static auto* cache = new std::map<std::pair<int, int64_t>, at::Tensor>();
  std::lock_guard<std::mutex> lock(mutex);
  at::Tensor& t = (*cache)[{static_cast<int>(like.get_device()), static_cast<int64_t>(stream.id())}];
  if (!t.defined() || t.numel() < B) {
    t = at::zeros({std::max<int64_t>(B, 64)}, like.options().dtype(at::kInt));
  }
  return t;
}

template <typename VT>
void launch(const Params& p, dim3 grid, cudaStream_t stream) {
  compact_kv_kernel<VT><<<grid, kThreads, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void compact_kv_cuda(const at::Tensor& kv, const at::Tensor& lengths, const at::Tensor& vis_start,
                     const at::Tensor& present, const at::Tensor& keep_mask) {
  check_compact_kv(kv, lengths, vis_start, present, keep_mask);
  c10::cuda::CUDAGuard device_guard(kv.device());
  const int64_t L = kv.size(0), B = kv.size(2), Hkv = kv.size(3), cap = kv.size(4);
  const int64_t nv = present.size(1);
  if (B == 0 || nv == 0) return;  // no visual token: nothing moves, metadata unchanged
  const int64_t row_bytes = kv.size(5) * kv.element_size();
  // nv <= INT_MAX - kThreads: the int tile loop (base += kThreads) must not overflow.
  TORCH_CHECK(B <= INT_MAX && Hkv <= INT_MAX && nv <= INT_MAX - kThreads && cap <= INT_MAX &&
                  row_bytes <= INT_MAX,
              "dyrate.compact_kv_: kv ", kv.sizes(), " too large for the CUDA kernel");
  const at::Tensor vs_c = vis_start.contiguous();
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor counters = counters_for(kv, B, stream);

  Params p;
  p.kv = static_cast<char*>(kv.data_ptr());
  p.row_bytes = row_bytes;
  p.cap = cap;
  p.rows_per_seq = L * 2 * Hkv;
  p.B = static_cast<int>(B);
  p.Hkv = static_cast<int>(Hkv);
  p.nv = static_cast<int>(nv);
  p.lengths = lengths.data_ptr<int64_t>();
  p.vis_start = vs_c.data_ptr<int64_t>();
  p.present = static_cast<uint8_t*>(present.data_ptr());
  p.keep = static_cast<const uint8_t*>(keep_mask.data_ptr());
  p.counters = counters.data_ptr<int>();
  // At least one block per sequence even without rows (L == 0): the metadata is still updated.
  const int64_t rows_y = std::min<int64_t>(std::max<int64_t>(p.rows_per_seq, 1), 65535);
  const dim3 grid(static_cast<unsigned>(B), static_cast<unsigned>(rows_y));

  // Widest copy unit that divides the row and the base address (rows start at multiples of
  // row_bytes from the base, so every slot is then aligned too).
  const uintptr_t addr = reinterpret_cast<uintptr_t>(p.kv);
  auto fits = [&](int64_t w) { return row_bytes % w == 0 && addr % w == 0; };
  if (fits(16)) launch<uint4>(p, grid, stream);
  else if (fits(8)) launch<uint2>(p, grid, stream);
  else if (fits(4)) launch<uint32_t>(p, grid, stream);
  else if (fits(2)) launch<uint16_t>(p, grid, stream);
  else launch<uint8_t>(p, grid, stream);
}

}  // namespace
}  // namespace cuda
}  // namespace dyrate

TORCH_LIBRARY_IMPL(dyrate, CUDA, m) { m.impl("compact_kv_", &dyrate::cuda::compact_kv_cuda); }
