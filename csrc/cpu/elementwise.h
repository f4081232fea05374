// Shared by the decoder's elementwise kernels (rms_norm.cpp, silu_mul.cpp, rope.cpp).
//
// Why these kernels: in a 609-token fp32 prefill of the Llama 768 x 12 preset, the PyTorch
// compositions (RMSNorm's pow / mean / rsqrt / two muls, RoPE's cat / neg / two muls / add and the
// head transpose, SiLU then mul, the residual add) took about 15% of the time, each of their ~20
// ops a pass over the activations (python_bench/RESULTS.md). Each kernel is one pass.
//
// Numerics are PyTorch's compositions (ops/decoder_elementwise.py): every intermediate is rounded
// to the data's dtype where PyTorch rounds it, and no multiply is fused into an add where PyTorch
// rounds between them. Only the order of the RMS sum of squares and silu's exp differ, in the
// last bits.
#pragma once
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>

#include "simd.h"

namespace dyrate::cpu {

// Rows of a few hundred elements: about 16K elements of work per task before splitting across
// threads, so a decode step's few rows stay on one thread.
inline int64_t elementwise_grain(int64_t row_elems) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(row_elems, 1));
}

// The rounding PyTorch does after each op. For float, the empty asm stops the compiler from
// fusing the product into a following add where this code is inlined into an FMA target.
template <typename S>
inline S round_to(float v) {
  return static_cast<S>(v);
}
#if DYRATE_HAVE_AVX2_PATH
template <>
inline float round_to<float>(float v) {
  __asm__("" : "+x"(v));
  return v;
}
#endif

// Runs fn(S-typed pointer tag) for x's dtype: float, bfloat16 or half.
template <typename Fn>
void dispatch_float(at::ScalarType dtype, Fn&& fn) {
  switch (dtype) {
    case at::kFloat: fn(static_cast<const float*>(nullptr)); break;
    case at::kBFloat16: fn(static_cast<const c10::BFloat16*>(nullptr)); break;
    case at::kHalf: fn(static_cast<const c10::Half*>(nullptr)); break;
    default: TORCH_CHECK(false, "dyrate: unsupported dtype ", dtype);
  }
}

}  // namespace dyrate::cpu
