// CPU kernel of dyrate::rope: rotary embedding of x [B, T, heads, hd] (e.g. a strided view of the
// fused q/k/v projection) into the attention layout [B, heads, T, hd], one pass (elementwise.h).
// out = x * cos + rotate_half(x) * sin, each product and the sum rounded as PyTorch rounds them.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <type_traits>

#include "../op_checks.h"
#include "elementwise.h"

namespace dyrate::cpu {
namespace {

template <typename S>
void rope_scalar(const S* x, const S* cos, const S* sin, S* out, int64_t from, int64_t half) {
  for (int64_t j = from; j < half; ++j) {
    const float lo = static_cast<float>(x[j]), hi = static_cast<float>(x[j + half]);
    const S a = round_to<S>(lo * static_cast<float>(cos[j]));
    const S b = round_to<S>(-hi * static_cast<float>(sin[j]));
    out[j] = round_to<S>(static_cast<float>(a) + static_cast<float>(b));
    const S c = round_to<S>(hi * static_cast<float>(cos[j + half]));
    const S e = round_to<S>(lo * static_cast<float>(sin[j + half]));
    out[j + half] = round_to<S>(static_cast<float>(c) + static_cast<float>(e));
  }
}

#if DYRATE_HAVE_AVX2_PATH
template <typename S>
DYRATE_AVX2 void rope_avx2(const S* x, const S* cos, const S* sin, S* out, int64_t half) {
  const S* tag = nullptr;
  const __m256 sign = _mm256_set1_ps(-0.f);
  int64_t j = 0;
  for (; j + 8 <= half; j += 8) {
    const __m256 lo = load8(x + j), hi = load8(x + j + half);
    const __m256 a = round8(_mm256_mul_ps(lo, load8(cos + j)), tag);
    const __m256 b = round8(_mm256_mul_ps(_mm256_xor_ps(hi, sign), load8(sin + j)), tag);
    store8(out + j, _mm256_add_ps(a, b));
    const __m256 c = round8(_mm256_mul_ps(hi, load8(cos + j + half)), tag);
    const __m256 e = round8(_mm256_mul_ps(lo, load8(sin + j + half)), tag);
    store8(out + j + half, _mm256_add_ps(c, e));
  }
  rope_scalar<S>(x, cos, sin, out, j, half);
}
#endif

template <typename S>
void rope_all(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
              at::Tensor& out) {
  const int64_t B = x.size(0), T = x.size(1), n = x.size(2), hd = x.size(3);
  const S* xp = x.const_data_ptr<S>();
  const S* cp = cos.const_data_ptr<S>();
  const S* sp = sin.const_data_ptr<S>();
  S* op = out.mutable_data_ptr<S>();
  const bool avx2 = cpu_has_avx2();
  at::parallel_for(0, B * T * n, elementwise_grain(hd), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / (T * n), t = (i / n) % T, h = i % n;
      const S* xh = xp + b * x.stride(0) + t * x.stride(1) + h * x.stride(2);
      const S* c = cp + b * cos.stride(0) + t * cos.stride(1);
      const S* s = sp + b * sin.stride(0) + t * sin.stride(1);
      S* o = op + ((b * n + h) * T + t) * hd;
#if DYRATE_HAVE_AVX2_PATH
      if (avx2) {
        rope_avx2<S>(xh, c, s, o, hd / 2);
        continue;
      }
#endif
      rope_scalar<S>(xh, c, s, o, 0, hd / 2);
    }
  });
}

void check_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  check_float_dtype(x, "x");
  TORCH_CHECK(x.dim() == 4 && x.size(3) % 2 == 0,
              "dyrate.rope: x must be [B, T, heads, head_dim] with an even head_dim, got ",
              x.sizes());
  TORCH_CHECK(x.stride(3) == 1, "dyrate.rope: x's head dimension must be contiguous");
  for (const at::Tensor* t : {&cos, &sin}) {
    TORCH_CHECK(t->dim() == 3 && t->size(0) == x.size(0) && t->size(1) == x.size(1) &&
                    t->size(2) == x.size(3),
                "dyrate.rope: cos and sin must be [", x.size(0), ", ", x.size(1), ", ", x.size(3),
                "], got ", t->sizes());
    TORCH_CHECK(t->scalar_type() == x.scalar_type() && t->device() == x.device(),
                "dyrate.rope: cos and sin must be ", x.scalar_type(), " on ", x.device());
    TORCH_CHECK(t->stride(2) == 1, "dyrate.rope: cos and sin must be contiguous in head_dim");
  }
}

at::Tensor rope_cpu(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  check_rope(x, cos, sin);
  at::Tensor out = at::empty({x.size(0), x.size(2), x.size(1), x.size(3)}, x.options());
  if (out.numel() == 0) return out;
  dispatch_float(x.scalar_type(), [&](auto tag) {
    using S = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    rope_all<S>(x, cos, sin, out);
  });
  return out;
}

}  // namespace
}  // namespace dyrate::cpu

TORCH_LIBRARY_IMPL(dyrate, CPU, m) { m.impl("rope", &dyrate::cpu::rope_cpu); }
