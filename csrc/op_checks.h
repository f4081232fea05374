// Metadata checks shared by the CPU and CUDA kernels: shapes, dtypes, devices. They read no tensor
// data, so they cost no device synchronisation. Value checks (lengths within capacity, NaN scores)
// are made by the CPU kernels and by the Python wrappers (`validate=True`); the CUDA kernels clamp
// every index instead, so nothing is ever written out of bounds.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <optional>

namespace dyrate {

inline void check_index_vector(const at::Tensor& t, const char* name, int64_t batch,
                               const at::Tensor& like) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == batch, "dyrate: ", name, " must have shape [", batch,
              "], got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kLong, "dyrate: ", name, " must be int64, got ",
              t.scalar_type());
  TORCH_CHECK(t.device() == like.device(), "dyrate: ", name, " is on ", t.device(),
              " but the data is on ", like.device());
}

// An optional table of visual-token slots: int64 [batch, >= width] on the data's device.
inline void check_slot_table(const std::optional<at::Tensor>& slots, int64_t batch,
                             int64_t width, const at::Tensor& like) {
  if (!slots.has_value() || !slots->defined()) return;
  TORCH_CHECK(slots->dim() == 2 && slots->size(0) == batch && slots->size(1) >= width,
              "dyrate: vis_slots must have shape [", batch, ", >= ", width, "], got ",
              slots->sizes());
  TORCH_CHECK(slots->scalar_type() == at::kLong, "dyrate: vis_slots must be int64, got ",
              slots->scalar_type());
  TORCH_CHECK(slots->device() == like.device(), "dyrate: vis_slots is on ", slots->device(),
              " but the data is on ", like.device());
}

inline void check_float_dtype(const at::Tensor& t, const char* name) {
  auto dt = t.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf, "dyrate: ", name,
              " must be float32, bfloat16 or float16, got ", dt);
}

// attention_scores: q [B, H, D]; k_cache [B, Hkv, Cap, D] (any strides, last dim contiguous).
inline void check_attention_scores(const at::Tensor& q, const at::Tensor& k_cache,
                                   const at::Tensor& lengths, const at::Tensor& vis_start,
                                   const at::Tensor& vis_len, const at::Tensor& prompt_len,
                                   int64_t max_vis, const std::optional<at::Tensor>& vis_slots) {
  TORCH_CHECK(q.dim() == 3, "dyrate.attention_scores: q must be [B, H, D], got ", q.sizes());
  TORCH_CHECK(k_cache.dim() == 4, "dyrate.attention_scores: k_cache must be [B, Hkv, Cap, D], got ",
              k_cache.sizes());
  check_float_dtype(q, "q");
  check_float_dtype(k_cache, "k_cache");
  TORCH_CHECK(q.device() == k_cache.device(), "dyrate.attention_scores: q is on ", q.device(),
              " but k_cache is on ", k_cache.device());
  const int64_t B = q.size(0), H = q.size(1), D = q.size(2), Hkv = k_cache.size(1);
  TORCH_CHECK(k_cache.size(0) == B && k_cache.size(3) == D,
              "dyrate.attention_scores: k_cache ", k_cache.sizes(), " does not match q ", q.sizes());
  TORCH_CHECK(Hkv > 0 && H % Hkv == 0, "dyrate.attention_scores: query heads (", H,
              ") must be a multiple of key heads (", Hkv, ")");
  TORCH_CHECK(D > 0 && q.stride(2) == 1 && k_cache.stride(3) == 1,
              "dyrate.attention_scores: the head dimension of q and k_cache must be contiguous");
  TORCH_CHECK(max_vis >= 0, "dyrate.attention_scores: max_vis must be >= 0, got ", max_vis);
  check_index_vector(lengths, "lengths", B, q);
  check_index_vector(vis_start, "vis_start", B, q);
  check_index_vector(vis_len, "vis_len", B, q);
  check_index_vector(prompt_len, "prompt_len", B, q);
  check_slot_table(vis_slots, B, max_vis, q);
}

// select_keep: scores float [B, Nv]; present bool [B, Nv]; n_keep int64 [B].
inline void check_select_keep(const at::Tensor& scores, const at::Tensor& present,
                              const at::Tensor& n_keep) {
  TORCH_CHECK(scores.dim() == 2, "dyrate.select_keep: scores must be [B, Nv], got ",
              scores.sizes());
  check_float_dtype(scores, "scores");
  TORCH_CHECK(present.sizes() == scores.sizes() && present.scalar_type() == at::kBool,
              "dyrate.select_keep: present must be a bool tensor shaped like scores ",
              scores.sizes(), ", got ", present.scalar_type(), " ", present.sizes());
  TORCH_CHECK(present.device() == scores.device(), "dyrate.select_keep: present is on ",
              present.device(), " but scores is on ", scores.device());
  check_index_vector(n_keep, "n_keep", scores.size(0), scores);
}

// compact_kv_: kv [L, 2, B, Hkv, Cap, D] contiguous; present/keep_mask bool [B, Nv].
inline void check_compact_kv(const at::Tensor& kv, const at::Tensor& lengths,
                             const at::Tensor& vis_start, const at::Tensor& present,
                             const at::Tensor& keep_mask,
                             const std::optional<at::Tensor>& vis_slots) {
  TORCH_CHECK(kv.dim() == 6 && kv.size(1) == 2,
              "dyrate.compact_kv_: kv must be [L, 2, B, Hkv, Cap, D], got ", kv.sizes());
  TORCH_CHECK(kv.is_contiguous(), "dyrate.compact_kv_: kv must be contiguous");
  const int64_t B = kv.size(2);
  TORCH_CHECK(present.dim() == 2 && present.size(0) == B && present.scalar_type() == at::kBool,
              "dyrate.compact_kv_: present must be bool [", B, ", Nv], got ", present.scalar_type(),
              " ", present.sizes());
  TORCH_CHECK(keep_mask.sizes() == present.sizes() && keep_mask.scalar_type() == at::kBool,
              "dyrate.compact_kv_: keep_mask must be bool shaped like present ", present.sizes(),
              ", got ", keep_mask.scalar_type(), " ", keep_mask.sizes());
  TORCH_CHECK(present.is_contiguous() && keep_mask.is_contiguous(),
              "dyrate.compact_kv_: present and keep_mask must be contiguous");
  TORCH_CHECK(present.device() == kv.device() && keep_mask.device() == kv.device(),
              "dyrate.compact_kv_: present and keep_mask must be on ", kv.device());
  check_index_vector(lengths, "lengths", B, kv);
  check_index_vector(vis_start, "vis_start", B, kv);
  TORCH_CHECK(lengths.is_contiguous(), "dyrate.compact_kv_: lengths must be contiguous");
  check_slot_table(vis_slots, B, present.size(1), kv);
  TORCH_CHECK(!vis_slots.has_value() || !vis_slots->defined() ||
                  vis_slots->size(1) == present.size(1),
              "dyrate.compact_kv_: vis_slots must be shaped like present ", present.sizes());
}

// decode_linear: x [..., K]; weight [N, K]; bias [N]; one float dtype, one device.
inline void check_decode_linear(const at::Tensor& x, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() >= 1, "dyrate.decode_linear: x must have at least one dimension");
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == x.size(-1),
              "dyrate.decode_linear: weight must be [N, ", x.size(-1), "], got ", weight.sizes());
  check_float_dtype(x, "x");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type() && weight.device() == x.device(),
              "dyrate.decode_linear: weight is ", weight.scalar_type(), " on ", weight.device(),
              " but x is ", x.scalar_type(), " on ", x.device());
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0),
                "dyrate.decode_linear: bias must be [", weight.size(0), "], got ", bias->sizes());
    TORCH_CHECK(bias->scalar_type() == x.scalar_type() && bias->device() == x.device(),
                "dyrate.decode_linear: bias is ", bias->scalar_type(), " on ", bias->device(),
                " but x is ", x.scalar_type(), " on ", x.device());
  }
}

// decode_attention: q [B, H, D]; k_cache, v_cache [B, Hkv, Cap, D] of q's dtype and device (any
// strides, head dim contiguous); lengths int64 [B]; window >= 1.
inline void check_decode_attention(const at::Tensor& q, const at::Tensor& k_cache,
                                   const at::Tensor& v_cache, const at::Tensor& lengths,
                                   std::optional<int64_t> window) {
  TORCH_CHECK(q.dim() == 3, "dyrate.decode_attention: q must be [B, H, D], got ", q.sizes());
  check_float_dtype(q, "q");
  const int64_t B = q.size(0), H = q.size(1), D = q.size(2);
  for (const at::Tensor* t : {&k_cache, &v_cache}) {
    TORCH_CHECK(t->dim() == 4 && t->size(0) == B && t->size(3) == D &&
                    t->sizes() == k_cache.sizes(),
                "dyrate.decode_attention: k_cache and v_cache must be [", B, ", Hkv, Cap, ", D,
                "] alike, got ", k_cache.sizes(), " and ", v_cache.sizes());
    TORCH_CHECK(t->scalar_type() == q.scalar_type() && t->device() == q.device(),
                "dyrate.decode_attention: the caches must have q's dtype and device (",
                q.scalar_type(), ", ", q.device(), "), got ", t->scalar_type(), " on ",
                t->device());
    TORCH_CHECK(t->stride(3) == 1,
                "dyrate.decode_attention: the caches need a contiguous head dim");
  }
  TORCH_CHECK(D > 0 && q.stride(2) == 1, "dyrate.decode_attention: q needs a contiguous head dim");
  TORCH_CHECK(k_cache.size(1) > 0 && H % k_cache.size(1) == 0,
              "dyrate.decode_attention: query heads (", H, ") must be a multiple of key heads (",
              k_cache.size(1), ")");
  TORCH_CHECK(!window.has_value() || *window >= 1,
              "dyrate.decode_attention: window must be >= 1, got ", window.value_or(0));
  check_index_vector(lengths, "lengths", B, q);
}

// causal_attention: q [B, H, T, D]; k, v [B, Hkv, S, D] alike with S >= T, of q's dtype and
// device (any strides, head dim contiguous); H a multiple of Hkv.
inline void check_causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(q.dim() == 4, "dyrate.causal_attention: q must be [B, H, T, D], got ", q.sizes());
  check_float_dtype(q, "q");
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  for (const at::Tensor* t : {&k, &v}) {
    TORCH_CHECK(t->dim() == 4 && t->size(0) == B && t->size(3) == D && t->sizes() == k.sizes(),
                "dyrate.causal_attention: k and v must be [", B, ", Hkv, S, ", D,
                "] alike, got ", k.sizes(), " and ", v.sizes());
    TORCH_CHECK(t->scalar_type() == q.scalar_type() && t->device() == q.device(),
                "dyrate.causal_attention: k and v must have q's dtype and device (",
                q.scalar_type(), ", ", q.device(), "), got ", t->scalar_type(), " on ",
                t->device());
    TORCH_CHECK(t->stride(3) == 1, "dyrate.causal_attention: k and v need a contiguous head dim");
  }
  TORCH_CHECK(D > 0 && q.stride(3) == 1,
              "dyrate.causal_attention: q needs a contiguous, non-empty head dim");
  TORCH_CHECK(k.size(1) > 0 && H % k.size(1) == 0, "dyrate.causal_attention: query heads (", H,
              ") must be a multiple of key heads (", k.size(1), ")");
  TORCH_CHECK(k.size(2) >= T, "dyrate.causal_attention: ", T,
              " queries need at least as many keys, got ", k.size(2));
}

}  // namespace dyrate
