#include <torch/library.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <chrono>
#include <vector>
#include <cstring>
extern "C" void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*, const int*, const float*, const int*, const float*, float*, const int*);

// C[R x 16] = alpha * A[R x K] . B[K x 16]; named accumulators so that they stay in registers.
template <int R, int NV>
__attribute__((target("avx2,fma"))) inline void micro(int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc, float alpha) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
         c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  const float* a0 = a; const float* a1 = a + lda; const float* a2 = a + 2 * lda;
  const float* a3 = a + 3 * lda; const float* a4 = a + 4 * lda; const float* a5 = a + 5 * lda;
  for (int64_t k = 0; k < K; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b + k * ldb);
    const __m256 b1 = NV > 1 ? _mm256_loadu_ps(b + k * ldb + 8) : b0;
    __m256 av;
#define ROW(r) if constexpr (R > r) { av = _mm256_broadcast_ss(a##r + k); c##r##0 = _mm256_fmadd_ps(av, b0, c##r##0); if constexpr (NV > 1) c##r##1 = _mm256_fmadd_ps(av, b1, c##r##1); }
    ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
#undef ROW
  }
  const __m256 al = _mm256_set1_ps(alpha);
#define OUT(r) if constexpr (R > r) { _mm256_storeu_ps(c + r * ldc, _mm256_mul_ps(c##r##0, al)); if constexpr (NV > 1) _mm256_storeu_ps(c + r * ldc + 8, _mm256_mul_ps(c##r##1, al)); }
  OUT(0) OUT(1) OUT(2) OUT(3) OUT(4) OUT(5)
#undef OUT
}

template <int NV>
__attribute__((target("avx2,fma"))) void panel(int64_t M, int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc, float alpha) {
  int64_t i = 0;
  for (; i + 6 <= M; i += 6) micro<6, NV>(K, a + i * lda, lda, b, ldb, c + i * ldc, ldc, alpha);
  switch (M - i) {
    case 5: micro<5, NV>(K, a + i * lda, lda, b, ldb, c + i * ldc, ldc, alpha); break;
    case 4: micro<4, NV>(K, a + i * lda, lda, b, ldb, c + i * ldc, ldc, alpha); break;
    case 3: micro<3, NV>(K, a + i * lda, lda, b, ldb, c + i * ldc, ldc, alpha); break;
    case 2: micro<2, NV>(K, a + i * lda, lda, b, ldb, c + i * ldc, ldc, alpha); break;
    case 1: micro<1, NV>(K, a + i * lda, lda, b, ldb, c + i * ldc, ldc, alpha); break;
  }
}

__attribute__((target("avx2,fma"))) void gemm(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc, float alpha) {
  int64_t j = 0;
  for (; j + 16 <= N; j += 16) panel<2>(M, K, a, lda, b + j, ldb, c + j, ldc, alpha);
  for (; j + 8 <= N; j += 8) panel<1>(M, K, a, lda, b + j, ldb, c + j, ldc, alpha);
  for (; j < N; ++j) for (int64_t r = 0; r < M; ++r) { float s = 0; for (int64_t k = 0; k < K; ++k) s += a[r*lda+k]*b[k*ldb+j]; c[r*ldc+j] = alpha*s; }
}

// Bench: per head h, blocks of 64 queries: QK (A=Q[64x64], B=KT[64 x n]) and PV (A=P[64 x n], B=V[n x 64]).
std::vector<double> bench(int64_t T, int64_t H, int64_t reps) {
  const int64_t D = 64, B = 64;
  std::vector<float> Q(H*T*D), KT(H*D*T), V(H*T*D), P(B*T), O(B*D), L(B*T);
  for (auto& x : Q) x = 0.01f; for (auto& x : KT) x = 0.02f; for (auto& x : V) x = 0.03f; for (auto& x : P) x = 0.001f;
  double t_mine_qk = 0, t_mkl_qk = 0, t_mine_pv = 0, t_mkl_pv = 0;
  for (int64_t rep = 0; rep < reps; ++rep) for (int64_t h = 0; h < H; ++h) for (int64_t t0 = 0; t0 < T; t0 += B) {
    const int64_t rows = std::min(B, T - t0), n = t0 + rows;
    const float* q = Q.data() + (h*T + t0)*D; const float* kt = KT.data() + h*D*T; const float* v = V.data() + h*T*D;
    auto s = std::chrono::steady_clock::now();
    gemm(rows, n, D, q, D, kt, T, L.data(), n, 0.125f);
    auto e = std::chrono::steady_clock::now(); t_mine_qk += std::chrono::duration<double>(e - s).count();
    { // MKL: row-major C[rows x n] = Q . KT  -> column-major C^T = KT^T... use: C^T(n x rows) = KT^T? KT is [D x T] row-major = [T x D] col-major
      const int M_ = n, N_ = rows, K_ = D, LDA = T, LDB = D, LDC = n; const float al = 0.125f, be = 0.f;
      s = std::chrono::steady_clock::now();
      sgemm_("N", "N", &M_, &N_, &K_, &al, kt, &LDA, q, &LDB, &be, L.data(), &LDC);
      e = std::chrono::steady_clock::now(); t_mkl_qk += std::chrono::duration<double>(e - s).count();
    }
    s = std::chrono::steady_clock::now();
    gemm(rows, D, n, P.data(), n, v, D, O.data(), D, 1.f);
    e = std::chrono::steady_clock::now(); t_mine_pv += std::chrono::duration<double>(e - s).count();
    { const int M_ = D, N_ = rows, K_ = n, LDA = D, LDB = n, LDC = D; const float al = 1.f, be = 0.f;
      s = std::chrono::steady_clock::now();
      sgemm_("N", "N", &M_, &N_, &K_, &al, v, &LDA, P.data(), &LDB, &be, O.data(), &LDC);
      e = std::chrono::steady_clock::now(); t_mkl_pv += std::chrono::duration<double>(e - s).count(); }
  }
  return {t_mine_qk, t_mkl_qk, t_mine_pv, t_mkl_pv};
}

// correctness check: random A,B vs MKL
double check(int64_t M, int64_t N, int64_t K) {
  std::vector<float> A(M*K), Bm(K*N), C1(M*N), C2(M*N);
  for (size_t i = 0; i < A.size(); ++i) A[i] = float((i * 37) % 101) / 101.f - 0.5f;
  for (size_t i = 0; i < Bm.size(); ++i) Bm[i] = float((i * 53) % 97) / 97.f - 0.5f;
  gemm(M, N, K, A.data(), K, Bm.data(), N, C1.data(), N, 0.5f);
  const int M_ = N, N_ = M, K_ = K, LDA = N, LDB = K, LDC = N; const float al = 0.5f, be = 0.f;
  sgemm_("N", "N", &M_, &N_, &K_, &al, Bm.data(), &LDA, A.data(), &LDB, &be, C2.data(), &LDC);
  double m = 0; for (size_t i = 0; i < C1.size(); ++i) m = std::max(m, (double)std::abs(C1[i]-C2[i]));
  return m;
}
TORCH_LIBRARY(s9mk, m) { m.def("bench(int T, int H, int reps) -> float[]", &bench); m.def("check(int M, int N, int K) -> float", &check); }
