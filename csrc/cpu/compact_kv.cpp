// CPU kernel of dyrate::compact_kv_. The slot plan (which runs of slots move where) depends only
// on the sequence, so it is built once per sequence and replayed on every (layer, K/V, head) row
// with memmove: each row moves only the slots after its first dropped token, once. The plan needs
// only the slots of the dropped tokens: everything between the i-th and the next dropped slot
// moves left by i, text between visual spans included.
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
// with memmove is safe: a run's destination ends at or before the next run's source. Visual token
// j sits at its original slot (vis_start + j, or slots[j]) less the tokens before it that earlier
// compactions removed.
std::vector<Run> plan_sequence(int64_t b, int64_t nv, int64_t vis_start, const int64_t* slots,
                               int64_t length, int64_t cap, const bool* present, const bool* keep,
                               int64_t* n_dropped) {
  std::vector<int64_t> dropped_slots;
  // last: the previous present token's slot; the first must sit at or after vis_start (one
  // span) or 0 (slots), and every later one strictly after it.
  int64_t gone = 0, last = slots != nullptr ? -1 : vis_start - 1;
  for (int64_t j = 0; j < nv; ++j) {
    if (!present[j]) {
      TORCH_CHECK(!keep[j], "dyrate.compact_kv_: keep_mask keeps visual token ", j,
                  " of sequence ", b, ", which is not present");
      ++gone;
      continue;
    }
    const int64_t slot = (slots != nullptr ? slots[j] : vis_start + j) - gone;
    TORCH_CHECK(slot > last, "dyrate.compact_kv_: sequence ", b,
                ": the present visual tokens' slots must increase strictly from 0; token ", j,
                " is at slot ", slot);
    last = slot;
    if (!keep[j]) dropped_slots.push_back(slot);
  }
  // With one span, last < length also bounds the span's end: its present tokens are packed
  // from vis_start.
  TORCH_CHECK((slots != nullptr || vis_start >= 0) && last < length && length <= cap,
              "dyrate.compact_kv_: sequence ", b, " needs 0 <= vis_start (", vis_start,
              "), the visual span (ending before slot ", last + 1, ") within lengths (", length,
              ") <= capacity (", cap, ")");
  std::vector<Run> runs;
  const int64_t k = static_cast<int64_t>(dropped_slots.size());
  for (int64_t i = 0; i < k; ++i) {
    const int64_t src = dropped_slots[i] + 1;
    const int64_t end = i + 1 < k ? dropped_slots[i + 1] : length;
    if (end > src) runs.push_back({src, src - (i + 1), end - src});
  }
  *n_dropped = k;
  return runs;
}

void compact_kv_cpu(const at::Tensor& kv, const at::Tensor& lengths, const at::Tensor& vis_start,
                    const at::Tensor& present, const at::Tensor& keep_mask,
                    const std::optional<at::Tensor>& vis_slots) {
  check_compact_kv(kv, lengths, vis_start, present, keep_mask, vis_slots);
  TORCH_CHECK(kv.device().is_cpu(), "dyrate.compact_kv_: CPU kernel got ", kv.device());
  const int64_t L = kv.size(0), B = kv.size(2), Hkv = kv.size(3), cap = kv.size(4);
  const int64_t nv = present.size(1);
  const int64_t slot_bytes = kv.size(5) * kv.element_size();
  const at::Tensor vs_c = vis_start.contiguous();
  int64_t* len_p = lengths.mutable_data_ptr<int64_t>();
  bool* present_p = present.mutable_data_ptr<bool>();
  const bool* keep_p = keep_mask.const_data_ptr<bool>();
  const int64_t* vs_p = vs_c.const_data_ptr<int64_t>();

  const bool spans = vis_slots.has_value() && vis_slots->defined();
  const at::Tensor slots_c = spans ? vis_slots->contiguous() : at::Tensor();
  std::vector<std::vector<Run>> plans(B);
  std::vector<int64_t> n_dropped(B);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t* slots = spans ? slots_c.const_data_ptr<int64_t>() + b * nv : nullptr;
    plans[b] = plan_sequence(b, nv, vs_p[b], slots, len_p[b], cap, present_p + b * nv,
                             keep_p + b * nv, &n_dropped[b]);
  }

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
