// Runtime-dispatched SIMD primitives for the CPU kernels. The extension is built without -march
// flags (a build must run on any x86-64), so the AVX2/FMA/F16C paths are compiled per function with
// a target attribute and chosen once at run time; a scalar path serves other CPUs.
#pragma once
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define DYRATE_HAVE_AVX2_PATH 1
#define DYRATE_AVX2 __attribute__((target("avx2,fma,f16c")))
#define DYRATE_AVX512 __attribute__((target("avx512f,avx512bw,avx2,fma,f16c")))
#else
#define DYRATE_HAVE_AVX2_PATH 0
#endif

namespace dyrate::cpu {

// DYRATE_CPU_ISA=avx2 or =scalar caps the paths chosen (read once), so that one machine can test
// every path; unset, the best the CPU has.
inline int cpu_isa_cap() {
  static const int cap = [] {
    const char* env = std::getenv("DYRATE_CPU_ISA");
    if (env == nullptr) return 2;
    const std::string name(env);
    return name == "scalar" ? 0 : name == "avx2" ? 1 : 2;
  }();
  return cap;
}

inline bool cpu_has_avx2() {
#if DYRATE_HAVE_AVX2_PATH
  static const bool ok = cpu_isa_cap() >= 1 && __builtin_cpu_supports("avx2") &&
                         __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  return ok;
#else
  return false;
#endif
}

inline bool cpu_has_avx512() {
#if DYRATE_HAVE_AVX2_PATH
  static const bool ok = cpu_isa_cap() >= 2 && cpu_has_avx2() &&
                         __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  return ok;
#else
  return false;
#endif
}

inline float to_float(float x) { return x; }
inline float to_float(c10::BFloat16 x) { return static_cast<float>(x); }
inline float to_float(c10::Half x) { return static_cast<float>(x); }

#if DYRATE_HAVE_AVX2_PATH
DYRATE_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
DYRATE_AVX2 inline __m256 load8(const c10::BFloat16* p) {
  // bf16 is the upper half of an fp32: widen and shift.
  __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}
DYRATE_AVX2 inline __m256 load8(const c10::Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// Rounds each lane to S's precision and back, as PyTorch rounds an op's result to the tensor's
// dtype (round to nearest even; NaN stays NaN). For float the value is kept as is, but the empty
// asm makes it a rounded register value, so the compiler cannot fuse the product that made it
// into a following add (an FMA skips that rounding; PyTorch does not).
DYRATE_AVX2 inline __m256 round8(__m256 v, const float*) {
  __asm__("" : "+x"(v));
  return v;
}
DYRATE_AVX2 inline __m256 round8(__m256 v, const c10::Half*) {
  return _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
DYRATE_AVX2 inline __m256i bf16_bits8(__m256 v) {  // the bf16 of each lane, in its upper half
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_and_si256(
      _mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))),
      _mm256_set1_epi32(static_cast<int>(0xFFFF0000u)));
  const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
  return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(rounded),
                                              _mm256_castsi256_ps(_mm256_set1_epi32(0x7FC00000)),
                                              nan));
}
DYRATE_AVX2 inline __m256 round8(__m256 v, const c10::BFloat16*) {
  return _mm256_castsi256_ps(bf16_bits8(v));
}

// Stores 8 lanes as S, rounded as round8 rounds.
DYRATE_AVX2 inline void store8(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
DYRATE_AVX2 inline void store8(c10::Half* p, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                   _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
DYRATE_AVX2 inline void store8(c10::BFloat16* p, __m256 v) {
  const __m256i halves = _mm256_srli_epi32(bf16_bits8(v), 16);
  // packus works within 128-bit lanes: lanes 0-3 and 4-7 land in 64-bit quarters 0 and 2.
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(halves, halves), 0x08);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
}

DYRATE_AVX512 inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
DYRATE_AVX512 inline __m512 load16(const c10::BFloat16* p) {
  __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}
DYRATE_AVX512 inline __m512 load16(const c10::Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

DYRATE_AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
  return _mm_cvtss_f32(s);
}

DYRATE_AVX2 inline float hmax8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 0x55));
  return _mm_cvtss_f32(s);
}

// exp(x) for x <= 0 (softmax numerators), Cephes-style: 2^n * p(r), |r| <= ln2/2, about 2 ulp.
// Inputs below -87.3 flush to 0 instead of producing denormals.
DYRATE_AVX2 inline __m256 exp8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.3f);
  const __m256 too_small = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_max_ps(x, lo);
  __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f),
                                             _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  __m256i pow2n = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 result = _mm256_mul_ps(p, _mm256_castsi256_ps(pow2n));
  return _mm256_andnot_ps(too_small, result);
}
#endif

}  // namespace dyrate::cpu
