// CPU kernel of dyrate::causal_attention: a prompt's causal self-attention for the prefill. One
// task per (sequence, query head, block of kQueryBlock queries) takes the block's logits against
// exactly the keys its last query sees (one GEMM), masks the diagonal, takes each row's softmax
// numerators in place, multiplies by the values (a second GEMM) and divides each output row by its
// sum. A whole row of logits fits in the task's buffer, so the softmax needs no running rescale,
// and no block computes keys above its own diagonal: PyTorch's CPU SDPA works in key blocks of 512
// and, on a 609-token prompt, computes about 1.6x the causal products.
//
// The GEMMs are the BLAS sgemm that PyTorch links (MKL on x86), on fp32 copies for bf16 and fp16
// inputs; where the library exports no sgemm_ they run through at::mm. Inside at::parallel_for the
// BLAS runs on the calling thread, so the tasks are the parallelism.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#include "../op_checks.h"
#include "attention_math.h"

// The Fortran BLAS entry point (LP64), weak so that a PyTorch without it still loads the library.
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n,
                       const int* k, const float* alpha, const float* a, const int* lda,
                       const float* b, const int* ldb, const float* beta, float* c,
                       const int* ldc) __attribute__((weak));

namespace dyrate::cpu {
namespace {

// Queries per task: 64 rows of logits over a 4k-token prompt are 1 MiB, and at 609 tokens the
// 12 heads give 120 tasks, enough to balance two to sixteen threads.
constexpr int64_t kQueryBlock = 64;

// Row-major C[m, n] = alpha * A[m, k] . op(B), where op(B) is B[n, k] transposed (b_transposed)
// or B[k, n]; leading dimensions are the row strides. BLAS is column-major, so it computes C^T.
void gemm_rows(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
               const float* b, int64_t ldb, bool b_transposed, float* c, int64_t ldc) {
  if (sgemm_ != nullptr) {
    const int M = int(n), N = int(m), K = int(k), LDA = int(ldb), LDB = int(lda), LDC = int(ldc);
    const float beta = 0.f;
    sgemm_(b_transposed ? "T" : "N", "N", &M, &N, &K, &alpha, b, &LDA, a, &LDB, &beta, c, &LDC);
    return;
  }
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor A = at::from_blob(const_cast<float*>(a), {m, k}, {lda, 1}, f32);
  const at::Tensor B = b_transposed
      ? at::from_blob(const_cast<float*>(b), {n, k}, {ldb, 1}, f32).t()
      : at::from_blob(const_cast<float*>(b), {k, n}, {ldb, 1}, f32);
  at::Tensor C = at::from_blob(c, {m, n}, {ldc, 1}, f32);
  at::mm_out(C, A, B).mul_(alpha);
}

// Rows [0, n) of a [rows, D] matrix with row stride `stride`, as fp32 with a leading dimension
// BLAS accepts: the data itself for fp32 rows apart (or a single row), else a copy.
template <typename T>
const float* as_fp32(const T* src, int64_t stride, int64_t n, int64_t D, std::vector<float>& buf,
                     int64_t* ld) {
  if constexpr (std::is_same_v<T, float>) {
    if (stride >= D || n <= 1) {
      *ld = std::max(stride, D);
      return src;
    }
  }
  buf.resize(n * D);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t d = 0; d < D; ++d) buf[i * D + d] = to_float(src[i * stride + d]);
  *ld = D;
  return buf.data();
}

struct Shape {
  int64_t B, H, Hkv, T, S, D;
  float scale;
};

struct Scratch {
  std::vector<float> logits, q, k, v, out, inv;
};

// Softmax numerators of row r over its first `visible` of n logits, then zeros over the rest, so
// that the values' GEMM can run over all n keys of the block; inv[r] is the row's 1 / sum, applied
// to the row's D outputs after that GEMM rather than to its n weights before it.
void softmax_rows(float* logits, int64_t rows, int64_t n, int64_t first_visible, float* inv) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = logits + r * n;
    const int64_t visible = std::min(n, first_visible + r);
    inv[r] = 1.f / softmax_numerators(row, visible);
    std::fill(row + visible, row + n, 0.f);
  }
}

template <typename T>
void attend_block(const Shape& s, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  T* out, int64_t b, int64_t h, int64_t t0, Scratch& w) {
  const int64_t rows = std::min(kQueryBlock, s.T - t0), kvh = h / (s.H / s.Hkv);
  const int64_t offset = s.S - s.T;  // query t sees keys [0, t + offset]
  const int64_t n = t0 + rows + offset, D = s.D;
  int64_t ldq, ldk, ldv;
  const float* qf = as_fp32(q.const_data_ptr<T>() + b * q.stride(0) + h * q.stride(1) +
                                t0 * q.stride(2), q.stride(2), rows, D, w.q, &ldq);
  const float* kf = as_fp32(k.const_data_ptr<T>() + b * k.stride(0) + kvh * k.stride(1),
                            k.stride(2), n, D, w.k, &ldk);
  const float* vf = as_fp32(v.const_data_ptr<T>() + b * v.stride(0) + kvh * v.stride(1),
                            v.stride(2), n, D, w.v, &ldv);
  w.logits.resize(rows * n);
  w.inv.resize(rows);
  gemm_rows(rows, n, D, s.scale, qf, ldq, kf, ldk, true, w.logits.data(), n);
  softmax_rows(w.logits.data(), rows, n, t0 + offset + 1, w.inv.data());
  T* o = out + ((b * s.T + t0) * s.H + h) * D;  // out is [B, T, H, D]
  if constexpr (std::is_same_v<T, float>) {
    gemm_rows(rows, D, n, 1.f, w.logits.data(), n, vf, ldv, false, o, s.H * D);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t d = 0; d < D; ++d) o[r * s.H * D + d] *= w.inv[r];
  } else {
    w.out.resize(rows * D);
    gemm_rows(rows, D, n, 1.f, w.logits.data(), n, vf, ldv, false, w.out.data(), D);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t d = 0; d < D; ++d)
        o[r * s.H * D + d] = static_cast<T>(w.out[r * D + d] * w.inv[r]);
  }
}

template <typename T>
void causal_attention_kernel(const Shape& s, const at::Tensor& q, const at::Tensor& k,
                             const at::Tensor& v, at::Tensor& out) {
  const int64_t blocks = (s.T + kQueryBlock - 1) / kQueryBlock;
  T* out_ptr = out.mutable_data_ptr<T>();
  // Task order (sequence, head, block) hands each thread whole heads, so the threads get the
  // same mix of short and long blocks.
  at::parallel_for(0, s.B * s.H * blocks, 1, [&](int64_t begin, int64_t end) {
    Scratch scratch;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t block = task % blocks, bh = task / blocks;
      attend_block<T>(s, q, k, v, out_ptr, bh / s.H, bh % s.H, block * kQueryBlock, scratch);
    }
  });
}

at::Tensor causal_attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                std::optional<double> scale) {
  check_causal_attention(q, k, v);
  TORCH_CHECK(q.device().is_cpu(), "dyrate.causal_attention: CPU kernel got ", q.device());
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  const float sc = static_cast<float>(scale.has_value() ? *scale : 1.0 / std::sqrt(double(D)));
  const Shape shape{B, H, k.size(1), T, k.size(2), D, sc};
  // [B, T, H, D] underneath, as PyTorch's CPU SDPA returns it: the output projection reads
  // [B, T, H * D] without a copy.
  at::Tensor out = at::empty({B, T, H, D}, q.options());
  if (out.numel() > 0) {
    switch (q.scalar_type()) {
      case at::kFloat:
        causal_attention_kernel<float>(shape, q, k, v, out);
        break;
      case at::kBFloat16:
        causal_attention_kernel<c10::BFloat16>(shape, q, k, v, out);
        break;
      default:
        causal_attention_kernel<c10::Half>(shape, q, k, v, out);
    }
  }
  return out.transpose(1, 2);
}

}  // namespace
}  // namespace dyrate::cpu

TORCH_LIBRARY_IMPL(dyrate, CPU, m) {
  m.impl("causal_attention", &dyrate::cpu::causal_attention_cpu);
}
