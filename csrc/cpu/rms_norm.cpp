// CPU kernels of dyrate::rms_norm and dyrate::add_rms_norm (the residual add, then RMSNorm):
// transformers' Llama RMSNorm, statistics in fp32, one pass over each row (elementwise.h).
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>
#include <type_traits>

#include "../op_checks.h"
#include "elementwise.h"

namespace dyrate::cpu {
namespace {

void check_rms(const char* op, const at::Tensor& x, const at::Tensor& weight) {
  check_float_dtype(x, "x");
  TORCH_CHECK(x.dim() >= 1, "dyrate.", op, ": x must have at least one dimension");
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == x.size(-1), "dyrate.", op,
              ": weight must be [", x.size(-1), "], got ", weight.sizes());
  TORCH_CHECK(weight.scalar_type() == x.scalar_type() && weight.device() == x.device(), "dyrate.",
              op, ": weight is ", weight.scalar_type(), " on ", weight.device(), " but x is ",
              x.scalar_type(), " on ", x.device());
}

// Columns [from, d) of a row, scalar: h = x (+ residual, rounded), returns the sum of h^2.
template <typename S>
float squares_scalar(const S* x, const S* residual, S* hidden, int64_t from, int64_t d) {
  float sum = 0.f;
  for (int64_t i = from; i < d; ++i) {
    float v = static_cast<float>(x[i]);
    if (residual != nullptr) {
      hidden[i] = round_to<S>(v + static_cast<float>(residual[i]));
      v = static_cast<float>(hidden[i]);
    }
    sum += v * v;
  }
  return sum;
}

template <typename S>
void normalise_scalar(const S* h, const S* weight, S* out, float inv, int64_t from, int64_t d) {
  for (int64_t i = from; i < d; ++i) {
    const S normed = round_to<S>(static_cast<float>(h[i]) * inv);
    out[i] = round_to<S>(static_cast<float>(weight[i]) * static_cast<float>(normed));
  }
}

#if DYRATE_HAVE_AVX2_PATH
// One row: out = weight * (h * rsqrt(mean(h^2) + eps)), the product rounded to S in between.
template <typename S>
DYRATE_AVX2 void rms_row_avx2(const S* x, const S* residual, const S* weight, S* hidden, S* out,
                              int64_t d, float eps) {
  const S* tag = nullptr;
  __m256 acc = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= d; j += 8) {
    __m256 v = load8(x + j);
    if (residual != nullptr) {
      v = round8(_mm256_add_ps(v, load8(residual + j)), tag);
      store8(hidden + j, v);
    }
    acc = _mm256_add_ps(acc, _mm256_mul_ps(v, v));
  }
  const float sum = hsum8(acc) + squares_scalar<S>(x, residual, hidden, j, d);
  const float inv = 1.f / std::sqrt(sum / static_cast<float>(d) + eps);
  const S* h = residual == nullptr ? x : hidden;
  const __m256 scale = _mm256_set1_ps(inv);
  for (j = 0; j + 8 <= d; j += 8) {
    const __m256 normed = round8(_mm256_mul_ps(load8(h + j), scale), tag);
    store8(out + j, _mm256_mul_ps(load8(weight + j), normed));
  }
  normalise_scalar<S>(h, weight, out, inv, j, d);
}
#endif

template <typename S>
void rms_row(const S* x, const S* residual, const S* weight, S* hidden, S* out, int64_t d,
             float eps) {
#if DYRATE_HAVE_AVX2_PATH
  if (cpu_has_avx2()) return rms_row_avx2<S>(x, residual, weight, hidden, out, d, eps);
#endif
  const float sum = squares_scalar<S>(x, residual, hidden, 0, d);
  const float inv = 1.f / std::sqrt(sum / static_cast<float>(d) + eps);
  normalise_scalar<S>(residual == nullptr ? x : hidden, weight, out, inv, 0, d);
}

// hidden is undefined without a residual.
void rms_rows(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight,
              at::Tensor& hidden, at::Tensor& out, double eps) {
  const int64_t d = x.size(-1), rows = d == 0 ? 0 : x.numel() / d;
  dispatch_float(x.scalar_type(), [&](auto tag) {
    using S = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    const S* xp = x.const_data_ptr<S>();
    const S* rp = residual.defined() ? residual.const_data_ptr<S>() : nullptr;
    const S* wp = weight.const_data_ptr<S>();
    S* hp = hidden.defined() ? hidden.mutable_data_ptr<S>() : nullptr;
    S* op = out.mutable_data_ptr<S>();
    at::parallel_for(0, rows, elementwise_grain(d), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r)
        rms_row<S>(xp + r * d, rp == nullptr ? nullptr : rp + r * d, wp,
                   hp == nullptr ? nullptr : hp + r * d, op + r * d, d, static_cast<float>(eps));
    });
  });
}

at::Tensor rms_norm_cpu(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check_rms("rms_norm", x, weight);
  at::Tensor out = at::empty(x.sizes(), x.options()), no_hidden;
  rms_rows(x.contiguous(), at::Tensor(), weight.contiguous(), no_hidden, out, eps);
  return out;
}

std::tuple<at::Tensor, at::Tensor> add_rms_norm_cpu(const at::Tensor& x,
                                                    const at::Tensor& residual,
                                                    const at::Tensor& weight, double eps) {
  check_rms("add_rms_norm", x, weight);
  TORCH_CHECK(residual.sizes() == x.sizes() && residual.scalar_type() == x.scalar_type() &&
                  residual.device() == x.device(),
              "dyrate.add_rms_norm: residual must be like x ", x.sizes(), " ", x.scalar_type(),
              ", got ", residual.sizes(), " ", residual.scalar_type());
  at::Tensor hidden = at::empty(x.sizes(), x.options()), out = at::empty(x.sizes(), x.options());
  rms_rows(x.contiguous(), residual.contiguous(), weight.contiguous(), hidden, out, eps);
  return {hidden, out};
}

}  // namespace
}  // namespace dyrate::cpu

TORCH_LIBRARY_IMPL(dyrate, CPU, m) {
  m.impl("rms_norm", &dyrate::cpu::rms_norm_cpu);
  m.impl("add_rms_norm", &dyrate::cpu::add_rms_norm_cpu);
}
