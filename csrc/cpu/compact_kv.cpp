// CPU kernel of dyrate::compact_kv_. The slot plan (which runs of slots move where) depends only
// on the sequence, so it is built once per sequence and replayed on every (layer, K/V, head) row
// with memmove: each row moves only the slots after its first dropped token, once.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>
#include <vector>

#include "../op_checks.h"

namespace dyrate::cpu {
namespace {

struct Run {
  int64_t src, dst, count;  // in slots
};

// Runs of slots that move left in sequence b, in increasing order. Moving them in this order
// with memmove is safe: a run's destination ends at or before the next run's source.
std::vector<Run> plan_sequence(int64_t b, int64_t nv, int64_t vis_start, int64_t length,
                               int64_t cap, const bool* present, const bool* keep,
                               int64_t* n_dropped) {
  std::vector<Run> runs;
  auto move = [&runs](int64_t src, int64_t dst, int64_t count) {
    if (count <= 0) return;
    if (!runs.empty() && runs.back().src + runs.back().count == src &&
        runs.back().dst + runs.back().count == dst) {
      runs.back().count += count;
    } else {
      runs.push_back({src, dst, count});
    }
  };
  int64_t slot = vis_start, dst = -1, dropped = 0;
  for (int64_t j = 0; j < nv; ++j) {
    if (!present[j]) {
      TORCH_CHECK(!keep[j], "dyrate.compact_kv_: keep_mask keeps visual token ", j,
                  " of sequence ", b, ", which is not present");
      continue;
    }
    if (!keep[j]) {
      if (dst < 0) dst = slot;
      ++dropped;
    } else if (dst >= 0) {
      move(slot, dst++, 1);
    }
    ++slot;
  }
  TORCH_CHECK(vis_start >= 0 && slot <= length && length <= cap, "dyrate.compact_kv_: sequence ",
              b, " needs 0 <= vis_start (", vis_start, "), vis_start + present tokens (", slot,
              ") <= lengths (", length, ") <= capacity (", cap, ")");
  if (dst >= 0) move(slot, dst, length - slot);  // everything after the visual span
  *n_dropped = dropped;
  return runs;
}

void compact_kv_cpu(const at::Tensor& kv, const at::Tensor& lengths, const at::Tensor& vis_start,
                    const at::Tensor& present, const at::Tensor& keep_mask) {
  check_compact_kv(kv, lengths, vis_start, present, keep_mask);
  TORCH_CHECK(kv.device().is_cpu(), "dyrate.compact_kv_: CPU kernel got ", kv.device());
  const int64_t L = kv.size(0), B = kv.size(2), Hkv = kv.size(3), cap = kv.size(4);
  const int64_t nv = present.size(1);
  const int64_t slot_bytes = kv.size(5) * kv.element_size();
  const at::Tensor vs_c = vis_start.contiguous();
  int64_t* len_p = lengths.mutable_data_ptr<int64_t>();
  bool* present_p = present.mutable_data_ptr<bool>();
  const bool* keep_p = keep_mask.const_data_ptr<bool>();
  const int64_t* vs_p = vs_c.const_data_ptr<int64_t>();

  std::vector<std::vector<Run>> plans(B);
  std::vector<int64_t> n_dropped(B);
  for (int64_t b = 0; b < B; ++b)
    plans[b] = plan_sequence(b, nv, vs_p[b], len_p[b], cap, present_p + b * nv,
                             keep_p + b * nv, &n_dropped[b]);

  char* base = static_cast<char*>(kv.data_ptr());
  const int64_t row_bytes = cap * slot_bytes;
  // Rows are (layer, K/V, sequence, head) in memory order; each is [Cap, D] contiguous.
  at::parallel_for(0, L * 2 * B * Hkv, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      char* row_ptr = base + row * row_bytes;
      for (const Run& run : plans[(row / Hkv) % B])
        std::memmove(row_ptr + run.dst * slot_bytes, row_ptr + run.src * slot_bytes,
                     run.count * slot_bytes);
    }
  });
  for (int64_t b = 0; b < B; ++b) {
    len_p[b] -= n_dropped[b];
    for (int64_t j = 0; j < nv; ++j) present_p[b * nv + j] = present_p[b * nv + j] && keep_p[b * nv + j];
  }
}

}  // namespace
}  // namespace dyrate::cpu

TORCH_LIBRARY_IMPL(dyrate, CPU, m) { m.impl("compact_kv_", &dyrate::cpu::compact_kv_cpu); }
