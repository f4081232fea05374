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
// Visual tokens in several spans (vis_slots given) take a second kernel: a pass over the tokens
// marks the current slot of every dropped one in a shared-memory bitmap (a present token sits at
// its original slot less the tokens before it that are gone), then a pass over the slots from
// the first dropped one moves every other slot left by the number of drops before it, tile by
// tile in increasing order, text between the spans included.
//
// Bad values are clamped, never checked (op_checks.h): lengths to [0, Cap], vis_start to
// [0, lengths]; kept = keep_mask & present; the visual span ends at min(vis_start + n_present,
// lengths) and only present tokens below lengths count as dropped (with vis_slots: only those
// whose current slot lies in [0, lengths)).
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <map>
#include <mutex>
#include <utility>

#include "../op_checks.h"
#include "common.cuh"
#include "compact_kv_moves.cuh"

namespace dyrate {
namespace cuda {
namespace {

using compact::finish_sequence;
using compact::kThreads;
using compact::move_listed_pairs;
using compact::move_slots;
using compact::Params;

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
    move_listed_pairs(row_ptr, p.rows_per_seq, V, n_pairs, s_src, s_dst);
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

  finish_sequence(p, b, raw_len, n_drop, keep, s_last);
}

// Several spans. Dynamic shared memory: one bit per slot of the capacity.
template <typename VT>
__global__ void __launch_bounds__(kThreads) compact_kv_spans_kernel(Params p) {
  extern __shared__ uint32_t drop_bits[];
  __shared__ int s_src[kThreads], s_dst[kThreads];
  __shared__ int scratch[kThreads / 32];
  __shared__ int s_last, s_first;

  const int b = blockIdx.x;
  const int tid = threadIdx.x;
  const int V = static_cast<int>(p.row_bytes / int64_t(sizeof(VT)));
  const int64_t raw_len = p.lengths[b];
  const int len = static_cast<int>(min(max(raw_len, int64_t(0)), p.cap));
  const uint8_t* pres = p.present + int64_t(b) * p.nv;
  const uint8_t* keep = p.keep + int64_t(b) * p.nv;
  const int64_t* slots = p.vis_slots + int64_t(b) * p.nv;
  const int n_words = static_cast<int>((p.cap + 31) / 32);
  for (int w = tid; w < n_words; w += kThreads) drop_bits[w] = 0u;
  if (tid == 0) s_first = len;
  __syncthreads();

  // Pass 1: mark the current slot of every dropped token.
  int gone = 0, n_drop = 0;
  for (int base = 0; base < p.nv; base += kThreads) {  // block-uniform
    const int i = base + tid;
    const bool in = i < p.nv;
    const bool pr = in && pres[i];
    int tot;
    const int before = block_exclusive_scan<kThreads>((in && !pr) ? 1 : 0, scratch, tot);
    int dr = 0;
    if (pr && !keep[i]) {
      const int64_t cur = slots[i] - (gone + before);
      if (cur >= 0 && cur < len) {
        atomicOr(drop_bits + (cur >> 5), 1u << (cur & 31));
        atomicMin(&s_first, static_cast<int>(cur));
        dr = 1;
      }
    }
    int drops;
    block_exclusive_scan<kThreads>(dr, scratch, drops);
    gone += tot;
    n_drop += drops;
  }
  __syncthreads();

  // Pass 2: from the first dropped slot, every other slot moves left by the drops before it.
  const int first = s_first;
  auto row_ptr = [&](int64_t r) {
    const int64_t lk = r / p.Hkv, h = r - lk * p.Hkv;
    return reinterpret_cast<VT*>(p.kv + ((lk * p.B + b) * p.Hkv + h) * p.cap * p.row_bytes);
  };
  int shift = 0;  // drops before the current tile
  for (int base = first; base < len; base += kThreads) {  // block-uniform
    const int s = base + tid;
    const bool in = s < len;
    const int dropped = (in && ((drop_bits[s >> 5] >> (s & 31)) & 1u)) ? 1 : 0;
    int tot;
    const int before = block_exclusive_scan<kThreads>(dropped, scratch, tot);
    const int mv = (in && !dropped && shift + before > 0) ? 1 : 0;
    int n_pairs;
    const int at = block_exclusive_scan<kThreads>(mv, scratch, n_pairs);
    if (mv) {
      s_src[at] = s;
      s_dst[at] = s - (shift + before);
    }
    shift += tot;
    __syncthreads();  // the pair list is complete
    move_listed_pairs(row_ptr, p.rows_per_seq, V, n_pairs, s_src, s_dst);
    __syncthreads();  // the pair list is read before the next tile rewrites it
  }
  finish_sequence(p, b, raw_len, n_drop, keep, s_last);
}

// Counters for the last-block pattern, cached per (device, stream) and zeroed once: each launch
// leaves them at 0, so launches on one stream (which run in order) can share them, but two
// compactions running concurrently on different streams must not count on the same ints. Grown
// (never shrunk) when B exceeds the cached size; the old buffer goes back to the caching
// allocator, which reuses it only in stream order. The map is never destroyed: freeing CUDA
// memory during static destruction can run after the CUDA runtime has shut down.
at::Tensor counters_for(const at::Tensor& like, int64_t B, const c10::cuda::CUDAStream& stream) {
  // Under CUDA-graph capture the cache must not grow (an allocation from the graph's private
  // pool would outlive the graph in the map): the graph owns its counters, zeroed by a memset
  // node that every replay runs before the kernel.
  if (c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None) {
    return at::zeros({B}, like.options().dtype(at::kInt));
  }
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
  if (p.vis_slots != nullptr) {
    const size_t bitmap = sizeof(uint32_t) * static_cast<size_t>((p.cap + 31) / 32);
    compact_kv_spans_kernel<VT><<<grid, kThreads, bitmap, stream>>>(p);
  } else {
    compact_kv_kernel<VT><<<grid, kThreads, 0, stream>>>(p);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void compact_kv_cuda(const at::Tensor& kv, const at::Tensor& lengths, const at::Tensor& vis_start,
                     const at::Tensor& present, const at::Tensor& keep_mask,
                     const std::optional<at::Tensor>& vis_slots) {
  check_compact_kv(kv, lengths, vis_start, present, keep_mask, vis_slots);
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
  const bool spans = vis_slots.has_value() && vis_slots->defined();
  const at::Tensor slots_c = spans ? vis_slots->contiguous() : at::Tensor();
  // The spans kernel keeps one bit per slot in shared memory, next to ~2 KB of its own.
  TORCH_CHECK(!spans || (cap + 31) / 32 * 4 <= 40 * 1024, "dyrate.compact_kv_: a capacity of ",
              cap, " slots is too large for the CUDA kernel with vis_slots (at most 327680)");
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
  p.vis_slots = spans ? slots_c.data_ptr<int64_t>() : nullptr;
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
