// Schemas of the dyrate ops: the one place that declares them (docs/DESIGN.md, "The fused ops").
// Kernels register themselves per dispatch key in csrc/cpu and csrc/cuda; the Python package
// registers fake (meta) kernels in dyrate_engine/ops.
#include <torch/library.h>

TORCH_LIBRARY(dyrate, m) {
  // One query per sequence against its key cache; head-mean softmax probability of each visual
  // token and each head's probability mass on the four token types. vis_slots (optional) lists
  // the slots of visual tokens that sit in several spans; without it they are one span.
  m.def(
      "attention_scores(Tensor q, Tensor k_cache, Tensor lengths, Tensor vis_start, "
      "Tensor vis_len, Tensor prompt_len, float? scale, int max_vis, Tensor? vis_slots=None) "
      "-> (Tensor, Tensor)");
  // Exactly n_keep[b] of the present visual tokens with the highest score; ties to the lower index.
  m.def("select_keep(Tensor scores, Tensor present, Tensor n_keep) -> Tensor");
  // In place, every pruned layer at once: drop present-but-not-kept visual tokens, shift later
  // slots left (stable), update lengths and present. vis_slots as for attention_scores.
  m.def(
      "compact_kv_(Tensor(a!) kv, Tensor(b!) lengths, Tensor vis_start, Tensor(c!) present, "
      "Tensor keep_mask, Tensor? vis_slots=None) -> ()");
  // x @ weight^T + bias for the few rows of a decode step (the decoder's linears and LM head).
  m.def("decode_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
  // One query per sequence against its own lengths[b] keys of a fixed-capacity cache (GQA,
  // optional sliding window); the monitor variant adds attention_scores' outputs from the same
  // pass. Kernels: Triton on CUDA (dyrate_engine/ops/triton); on the CPU, decode_attention in C++
  // (cpu/decode_attention.cpp) and the monitor variant's PyTorch reference.
  m.def(
      "decode_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor lengths, float? scale, "
      "int? window) -> Tensor");
  m.def(
      "decode_attention_monitor(Tensor q, Tensor k_cache, Tensor v_cache, Tensor lengths, "
      "Tensor visual_rank, Tensor vis_start, Tensor prompt_len, float? scale, int max_vis) "
      "-> (Tensor, Tensor, Tensor)");
  // The decoder's elementwise work, one pass each (cpu/decoder_elementwise.cpp): RMSNorm, the
  // residual add then RMSNorm (returns the sum and its norm), silu(gate) * up of the fused gate/up
  // output, and RoPE of [B, T, heads, head_dim] into the [B, heads, T, head_dim] attention layout.
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("add_rms_norm(Tensor x, Tensor residual, Tensor weight, float eps) -> (Tensor, Tensor)");
  m.def("silu_mul(Tensor gate_up) -> Tensor");
  m.def("rope(Tensor x, Tensor cos, Tensor sin) -> Tensor");
  // A prompt's causal self-attention for the prefill (cpu/causal_attention.cpp): query t of T
  // sees keys [0, t + S - T] of S (GQA as decode_attention).
  m.def("causal_attention(Tensor q, Tensor k, Tensor v, float? scale) -> Tensor");
}
