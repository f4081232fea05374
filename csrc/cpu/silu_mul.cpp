// CPU kernel of dyrate::silu_mul: silu(gate) * up of the fused gate/up projection, one pass
// (elementwise.h), each product rounded to the dtype as F.silu(gate) * up rounds it.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <type_traits>
#include <vector>

#include "../op_checks.h"
#include "elementwise.h"

namespace dyrate::cpu {
namespace {

template <typename S>
void silu_mul_scalar(const S* g, const S* u, S* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float x = static_cast<float>(g[i]);
    const S s = round_to<S>(x / (1.f + std::exp(-x)));
    out[i] = round_to<S>(static_cast<float>(s) * static_cast<float>(u[i]));
  }
}

#if DYRATE_HAVE_AVX2_PATH
// exp8 takes arguments <= 0, so sigmoid(x) is 1 / (1 + e^-|x|) for x >= 0 and e^x / (1 + e^x)
// below.
template <typename S>
DYRATE_AVX2 void silu_mul_avx2(const S* g, const S* u, S* out, int64_t n) {
  const S* tag = nullptr;
  const __m256 one = _mm256_set1_ps(1.f), sign = _mm256_set1_ps(-0.f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = load8(g + i);
    const __m256 e = exp8(_mm256_or_ps(x, sign));  // e^-|x|
    const __m256 negative = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
    const __m256 numerator = _mm256_blendv_ps(one, e, negative);
    const __m256 s = round8(_mm256_mul_ps(x, _mm256_div_ps(numerator, _mm256_add_ps(one, e))), tag);
    store8(out + i, _mm256_mul_ps(s, load8(u + i)));
  }
  silu_mul_scalar<S>(g + i, u + i, out + i, n - i);
}
#endif

at::Tensor silu_mul_cpu(const at::Tensor& gate_up) {
  check_float_dtype(gate_up, "gate_up");
  TORCH_CHECK(gate_up.dim() >= 1 && gate_up.size(-1) % 2 == 0,
              "dyrate.silu_mul: gate_up's last dimension must be even (gate then up), got ",
              gate_up.sizes());
  const at::Tensor gc = gate_up.contiguous();
  std::vector<int64_t> shape(gate_up.sizes().begin(), gate_up.sizes().end());
  const int64_t f = shape.back() / 2;
  shape.back() = f;
  at::Tensor out = at::empty(shape, gate_up.options());
  const int64_t rows = f == 0 ? 0 : out.numel() / f;
  dispatch_float(gate_up.scalar_type(), [&](auto tag) {
    using S = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    const S* gu = gc.const_data_ptr<S>();
    S* op = out.mutable_data_ptr<S>();
    at::parallel_for(0, rows, elementwise_grain(f), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const S* g = gu + r * 2 * f;
#if DYRATE_HAVE_AVX2_PATH
        if (cpu_has_avx2()) {
          silu_mul_avx2<S>(g, g + f, op + r * f, f);
          continue;
        }
#endif
        silu_mul_scalar<S>(g, g + f, op + r * f, f);
      }
    });
  });
  return out;
}

}  // namespace
}  // namespace dyrate::cpu

TORCH_LIBRARY_IMPL(dyrate, CPU, m) { m.impl("silu_mul", &dyrate::cpu::silu_mul_cpu); }
