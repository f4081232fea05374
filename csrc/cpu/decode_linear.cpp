// CPU kernel of dyrate::decode_linear: y = x W^T (+ bias) for the few rows of a decode step.
//
// Why not at::linear: MKL's sgemm packs W on every call and blocks for many rows, so at 1-64 rows it
// runs at a fraction of the weight bandwidth; on the 2-core dev CPU (AMD EPYC, AVX2) the 32000 x 768
// LM head at 8 rows took 24 ms through F.linear and 13 ms as W @ x^T, and 8 ms here
// (dyrate bench ops, python_bench/RESULTS.md). This kernel streams every weight row exactly once and
// multiplies it against all input rows, read from cache, so a decode step is bound by reading
// the weights. Above kMaxRows (prefill) at::linear is faster and is used.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../op_checks.h"
#include "simd.h"

namespace dyrate::cpu {
namespace {

#if DYRATE_HAVE_AVX2_PATH
// No bound on the bytes of the input rows, though they are re-read for every weight block: at the
// 7B widths they outgrow L2 (64 x 11008 fp32 is 2.7 MiB) and the kernel still took 42.5 ms where
// F.linear took 75.9 (4096 x 11008 weight; at 8 rows 9.1 vs 24.4 ms; python_bench/RESULTS.md).
constexpr int64_t kMaxRows = 64;
// A block is 3 weight rows x 4 input rows: 12 accumulators + 3 weight registers + 1 input register
// fill AVX2's 16 without spilling. Of the shapes tried (4x3, 3x4, 2x6, 4x2, 2x4, 4x4, 8x1) it was
// the fastest or within 3% of it on the gate/up, down and LM-head matrices at 8 and 16 rows.
constexpr int kWeightRows = 3;
constexpr int kInputRows = 4;

// y[j][i] = <x row j, w row i> + bias[i] for NB weight rows and MB input rows of length K; y has
// row stride N. Writing y directly (no staging tile) measured about 10% faster.
template <typename S, int NB, int MB>
DYRATE_AVX2 inline void dot_block(const S* x, const S* w, const S* bias, S* y, int64_t K,
                                  int64_t N) {
  __m256 acc[MB][NB];
  for (int j = 0; j < MB; ++j)
    for (int i = 0; i < NB; ++i) acc[j][i] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 wv[NB];
    for (int i = 0; i < NB; ++i) wv[i] = load8(w + i * K + k);
    for (int j = 0; j < MB; ++j) {
      const __m256 xv = load8(x + j * K + k);
      for (int i = 0; i < NB; ++i) acc[j][i] = _mm256_fmadd_ps(wv[i], xv, acc[j][i]);
    }
  }
  for (int j = 0; j < MB; ++j)
    for (int i = 0; i < NB; ++i) {
      float sum = hsum8(acc[j][i]) + (bias == nullptr ? 0.f : to_float(bias[i]));
      for (int64_t t = k; t < K; ++t) sum += to_float(w[i * K + t]) * to_float(x[j * K + t]);
      y[j * N + i] = static_cast<S>(sum);
    }
}

// All M input rows against NB weight rows, kInputRows at a time.
template <typename S, int NB>
DYRATE_AVX2 void weight_rows(const S* x, const S* w, const S* bias, S* y, int64_t M, int64_t K,
                             int64_t N) {
  int64_t m = 0;
  for (; m + kInputRows <= M; m += kInputRows)
    dot_block<S, NB, kInputRows>(x + m * K, w, bias, y + m * N, K, N);
  switch (M - m) {
    case 3: dot_block<S, NB, 3>(x + m * K, w, bias, y + m * N, K, N); break;
    case 2: dot_block<S, NB, 2>(x + m * K, w, bias, y + m * N, K, N); break;
    case 1: dot_block<S, NB, 1>(x + m * K, w, bias, y + m * N, K, N); break;
    default: break;
  }
}

// The same blocks in 16-lane AVX-512 registers, where the CPU has them: 4 weight rows x 4 input
// rows (16 of the 32 registers accumulate), or 8 weight rows at 1-2 input rows, where more rows
// streamed at once kept more loads in flight. On the 2-core Xeon (AVX-512) the twelve layers'
// linears of the cpu-vllm shape took 14-15 ms at 1 row against 17-18 with AVX2 (F.linear 14-16),
// and 21 ms against 25 at 8 rows (python_bench/RESULTS.md).
template <typename S, int NB, int MB>
DYRATE_AVX512 inline void dot_block16(const S* x, const S* w, const S* bias, S* y, int64_t K,
                                      int64_t N) {
  __m512 acc[MB][NB];
  for (int j = 0; j < MB; ++j)
    for (int i = 0; i < NB; ++i) acc[j][i] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 wv[NB];
    for (int i = 0; i < NB; ++i) wv[i] = load16(w + i * K + k);
    for (int j = 0; j < MB; ++j) {
      const __m512 xv = load16(x + j * K + k);
      for (int i = 0; i < NB; ++i) acc[j][i] = _mm512_fmadd_ps(wv[i], xv, acc[j][i]);
    }
  }
  for (int j = 0; j < MB; ++j)
    for (int i = 0; i < NB; ++i) {
      float sum = _mm512_reduce_add_ps(acc[j][i]) + (bias == nullptr ? 0.f : to_float(bias[i]));
      for (int64_t t = k; t < K; ++t) sum += to_float(w[i * K + t]) * to_float(x[j * K + t]);
      y[j * N + i] = static_cast<S>(sum);
    }
}

template <typename S, int NB>
DYRATE_AVX512 void weight_rows16(const S* x, const S* w, const S* bias, S* y, int64_t M, int64_t K,
                                 int64_t N) {
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) dot_block16<S, NB, 4>(x + m * K, w, bias, y + m * N, K, N);
  switch (M - m) {
    case 3: dot_block16<S, NB, 3>(x + m * K, w, bias, y + m * N, K, N); break;
    case 2: dot_block16<S, NB, 2>(x + m * K, w, bias, y + m * N, K, N); break;
    case 1: dot_block16<S, NB, 1>(x + m * K, w, bias, y + m * N, K, N); break;
    default: break;
  }
}

template <typename S, int kRows16>
void decode_linear_kernel16(const S* x, const S* w, const S* bias, S* y, int64_t M, int64_t N,
                            int64_t K) {
  const int64_t blocks = (N + kRows16 - 1) / kRows16;
  at::parallel_for(0, blocks, 48 / kRows16, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const int64_t n = block * kRows16;
      const S* b = bias == nullptr ? nullptr : bias + n;
      if (n + kRows16 <= N) {
        weight_rows16<S, kRows16>(x, w + n * K, b, y + n, M, K, N);
      } else {
        for (int64_t i = n; i < N; ++i)
          weight_rows16<S, 1>(x, w + i * K, bias == nullptr ? nullptr : bias + i, y + i, M, K, N);
      }
    }
  });
}

template <typename S>
void decode_linear_kernel(const S* x, const S* w, const S* bias, S* y, int64_t M, int64_t N,
                          int64_t K) {
  const int64_t blocks = (N + kWeightRows - 1) / kWeightRows;
  // About 48 weight rows a task: enough to split a 768-row matrix over the two cores, and the
  // tiny test models (a few dozen rows) stay on one thread.
  at::parallel_for(0, blocks, 16, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const int64_t n = block * kWeightRows;
      const S* b = bias == nullptr ? nullptr : bias + n;
      if (n + kWeightRows <= N) {
        weight_rows<S, kWeightRows>(x, w + n * K, b, y + n, M, K, N);
      } else {  // the last, partial block: one weight row at a time
        for (int64_t i = n; i < N; ++i)
          weight_rows<S, 1>(x, w + i * K, bias == nullptr ? nullptr : bias + i, y + i, M, K, N);
      }
    }
  });
}

template <typename S>
void run(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, at::Tensor& y,
         int64_t M, int64_t N, int64_t K) {
  const S* xp = x.const_data_ptr<S>();
  const S* wp = w.const_data_ptr<S>();
  const S* bp = bias.defined() ? bias.const_data_ptr<S>() : nullptr;
  S* yp = y.mutable_data_ptr<S>();
  if (cpu_has_avx512()) {
    if (M <= 2) return decode_linear_kernel16<S, 8>(xp, wp, bp, yp, M, N, K);
    return decode_linear_kernel16<S, 4>(xp, wp, bp, yp, M, N, K);
  }
  decode_linear_kernel<S>(xp, wp, bp, yp, M, N, K);
}
#endif

at::Tensor decode_linear_cpu(const at::Tensor& x, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias_in) {
  // An undefined tensor in the optional means no bias, as at::linear reads it.
  const std::optional<at::Tensor> bias =
      bias_in.has_value() && bias_in->defined() ? bias_in : std::nullopt;
  check_decode_linear(x, weight, bias);
  TORCH_CHECK(x.device().is_cpu(), "dyrate.decode_linear: CPU kernel got ", x.device());
#if DYRATE_HAVE_AVX2_PATH
  const int64_t K = x.size(-1), N = weight.size(0), M = x.numel() / std::max<int64_t>(K, 1);
  if (cpu_has_avx2() && M <= kMaxRows && K > 0) {
    const at::Tensor xc = x.contiguous(), wc = weight.contiguous();
    const at::Tensor bc = bias.has_value() ? bias->contiguous() : at::Tensor();
    std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
    out_shape.back() = N;
    at::Tensor y = at::empty(out_shape, x.options());
    if (M == 0 || N == 0) return y;
    switch (x.scalar_type()) {
      case at::kFloat: run<float>(xc, wc, bc, y, M, N, K); break;
      case at::kBFloat16: run<c10::BFloat16>(xc, wc, bc, y, M, N, K); break;
      default: run<c10::Half>(xc, wc, bc, y, M, N, K);
    }
    return y;
  }
#endif
  return at::linear(x, weight, bias);
}

}  // namespace
}  // namespace dyrate::cpu

TORCH_LIBRARY_IMPL(dyrate, CPU, m) { m.impl("decode_linear", &dyrate::cpu::decode_linear_cpu); }
