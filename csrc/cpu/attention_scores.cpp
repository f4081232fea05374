// CPU kernel of dyrate::attention_scores. One task per (sequence, key head): the keys are read once
// for all query heads of the group (GQA), logits go to a task-local buffer that stays in cache, and
// the softmax, the four token-type masses and the visual probabilities come from that buffer. A
// sequence's slots are cut into runs of one token type (one image run per span of visual tokens),
// so several images or video frames cost one more run each, not a lookup per key.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../op_checks.h"
#include "attention_math.h"

namespace dyrate::cpu {
namespace {

enum TokenType { kSystem = 0, kImage = 1, kInstruction = 2, kResponse = 3 };

// Slots [begin, end) of one token type; an image run's first token has visual rank `rank`.
struct Run {
  int64_t begin, end;
  int type;
  int64_t rank;
};

// One sequence: its runs in slot order, covering [0, len).
struct Layout {
  std::vector<Run> runs;
  int64_t len = 0;
};

template <typename K>
void attention_scores_kernel(const at::Tensor& q_scaled, const at::Tensor& k_cache,
                             const std::vector<Layout>& layouts, at::Tensor& vis_partial,
                             at::Tensor& type_mass) {
  const int64_t B = q_scaled.size(0), H = q_scaled.size(1), D = q_scaled.size(2);
  const int64_t Hkv = k_cache.size(1), G = H / Hkv, max_vis = vis_partial.size(2);
  const K* k_ptr = k_cache.const_data_ptr<K>();
  const float* q_ptr = q_scaled.const_data_ptr<float>();
  float* vis_ptr = vis_partial.mutable_data_ptr<float>();
  float* mass_ptr = type_mass.mutable_data_ptr<float>();
  const bool simd = cpu_has_avx2();
  at::parallel_for(0, B * Hkv, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> buffer;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / Hkv, kvh = task % Hkv;
      const Layout& layout = layouts[b];
      const int64_t len = layout.len;
      float* vis_out = vis_ptr + task * max_vis;
      float* mass_out = mass_ptr + (b * H + kvh * G) * 4;
      if (len == 0) continue;  // outputs stay zero: no keys, no mass
      buffer.resize(G * len);
      const K* k = k_ptr + b * k_cache.stride(0) + kvh * k_cache.stride(1);
      const float* q = q_ptr + (b * H + kvh * G) * D;
#if DYRATE_HAVE_AVX2_PATH
      if (simd)
        logits_avx2(k, k_cache.stride(2), len, q, G, D, buffer.data());
      else
#endif
        logits_scalar(k, k_cache.stride(2), 0, len, q, G, D, buffer.data());
      for (int64_t g = 0; g < G; ++g) {
        float* logits = buffer.data() + g * len;
        float seg_sum[4] = {0.f, 0.f, 0.f, 0.f};
#if DYRATE_HAVE_AVX2_PATH
        if (simd) {
          const float m = max_avx2(logits, len);
          for (const Run& r : layout.runs)
            seg_sum[r.type] += exp_sum_avx2(logits + r.begin, r.end - r.begin, m);
        } else
#endif
        {
          const float m = max_scalar(logits, len);
          for (const Run& r : layout.runs)
            seg_sum[r.type] += exp_sum_scalar(logits + r.begin, r.end - r.begin, m);
        }
        const float total = seg_sum[0] + seg_sum[1] + seg_sum[2] + seg_sum[3];
        for (int t = 0; t < 4; ++t) mass_out[g * 4 + t] = seg_sum[t] / total;
        // Head mean: each head contributes p / H to the score of a visual token.
        const float weight = 1.f / (total * static_cast<float>(H));
        for (const Run& r : layout.runs) {
          if (r.type != kImage) continue;
          const float* image = logits + r.begin;
          float* out = vis_out + r.rank;
          for (int64_t j = 0; j < r.end - r.begin; ++j) out[j] += image[j] * weight;
        }
      }
    }
  });
}

// The runs of sequence b, with every value check: the visual slots (vis_start + r, or slots[r])
// strictly increasing from vis_start, before prompt_len <= len <= cap.
Layout layout_of(int64_t b, int64_t vs, int64_t vl, int64_t pl, int64_t len, int64_t cap,
                 int64_t max_vis, const int64_t* slots) {
  // With slots the visual tokens' end is checked run by run below; vis_start still bounds the
  // system run, so it may not pass prompt_len even when there are no visual tokens.
  TORCH_CHECK(vs >= 0 && vl >= 0 && vl <= max_vis && pl <= len && len <= cap &&
                  vs + (slots != nullptr ? 0 : vl) <= pl,
              "dyrate.attention_scores: sequence ", b, " needs 0 <= vis_start (", vs,
              "), 0 <= vis_len (", vl, ") <= max_vis (", max_vis,
              "), vis_start + vis_len <= prompt_len (", pl, ") <= lengths (", len,
              ") <= capacity (", cap, ")");
  auto slot = [&](int64_t r) { return slots != nullptr ? slots[r] : vs + r; };
  Layout layout;
  layout.len = len;
  auto add = [&layout](int64_t begin, int64_t end, int type, int64_t rank) {
    if (end > begin) layout.runs.push_back({begin, end, type, rank});
  };
  add(0, vs, kSystem, 0);
  int64_t cursor = vs;
  for (int64_t r = 0; r < vl;) {
    const int64_t start = slot(r);
    TORCH_CHECK(start >= cursor && (r > 0 || start == vs) && start < pl,
                "dyrate.attention_scores: sequence ", b, ": vis_slots must start at vis_start (",
                vs, "), increase strictly and stay below prompt_len (", pl, "); visual token ",
                r, " is at slot ", start);
    add(cursor, start, kInstruction, 0);
    int64_t end = start + 1, next = r + 1;
    while (next < vl && slot(next) == end) ++end, ++next;
    TORCH_CHECK(end <= pl, "dyrate.attention_scores: sequence ", b,
                ": visual tokens must stay below prompt_len (", pl, ")");
    add(start, end, kImage, r);
    cursor = end;
    r = next;
  }
  add(cursor, pl, kInstruction, 0);
  add(pl, len, kResponse, 0);
  return layout;
}

std::tuple<at::Tensor, at::Tensor> attention_scores_cpu(
    const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& lengths,
    const at::Tensor& vis_start, const at::Tensor& vis_len, const at::Tensor& prompt_len,
    std::optional<double> scale, int64_t max_vis, const std::optional<at::Tensor>& vis_slots) {
  check_attention_scores(q, k_cache, lengths, vis_start, vis_len, prompt_len, max_vis, vis_slots);
  TORCH_CHECK(q.device().is_cpu(), "dyrate.attention_scores: CPU kernel got ", q.device());
  const int64_t B = q.size(0), H = q.size(1), D = q.size(2), Hkv = k_cache.size(1);
  const int64_t cap = k_cache.size(2);
  const double s = scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(D));
  const at::Tensor q_scaled = q.to(at::kFloat).mul(s).contiguous();
  const at::Tensor len_c = lengths.contiguous(), vs_c = vis_start.contiguous();
  const at::Tensor vl_c = vis_len.contiguous(), pl_c = prompt_len.contiguous();
  const int64_t *len_p = len_c.const_data_ptr<int64_t>(), *vs_p = vs_c.const_data_ptr<int64_t>();
  const int64_t *vl_p = vl_c.const_data_ptr<int64_t>(), *pl_p = pl_c.const_data_ptr<int64_t>();
  const bool spans = vis_slots.has_value() && vis_slots->defined();
  const at::Tensor slots_c = spans ? vis_slots->contiguous() : at::Tensor();
  std::vector<Layout> layouts(B);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t* slots = spans ? slots_c.const_data_ptr<int64_t>() + b * slots_c.size(1) : nullptr;
    layouts[b] = layout_of(b, vs_p[b], vl_p[b], pl_p[b], len_p[b], cap, max_vis, slots);
  }
  at::Tensor vis_partial = at::zeros({B, Hkv, max_vis}, q.options().dtype(at::kFloat));
  at::Tensor type_mass = at::zeros({B, H, 4}, q.options().dtype(at::kFloat));
  switch (k_cache.scalar_type()) {
    case at::kFloat:
      attention_scores_kernel<float>(q_scaled, k_cache, layouts, vis_partial, type_mass);
      break;
    case at::kBFloat16:
      attention_scores_kernel<c10::BFloat16>(q_scaled, k_cache, layouts, vis_partial, type_mass);
      break;
    default:
      attention_scores_kernel<c10::Half>(q_scaled, k_cache, layouts, vis_partial, type_mass);
  }
  return {vis_partial.sum(1), type_mass};
}

}  // namespace
}  // namespace dyrate::cpu

TORCH_LIBRARY_IMPL(dyrate, CPU, m) {
  m.impl("attention_scores", &dyrate::cpu::attention_scores_cpu);
}
