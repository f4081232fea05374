// Small device helpers shared by the dyrate CUDA kernels (docs/DESIGN.md, "The fused ops").
// Only c10/cuda headers here, never ATen/cuda/CUDAContext.h: that one pulls cuBLAS/cuSPARSE headers
// which the compile-check toolkit lacks (docs/DESIGN.md, "Build").
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>  // C10_CUDA_KERNEL_LAUNCH_CHECK
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace dyrate {
namespace cuda {

constexpr unsigned kFullMask = 0xffffffffu;

template <typename T>
__host__ __device__ constexpr T ceil_div(T a, T b) {
  return (a + b - 1) / b;
}

// Explicit intrinsics: CUDAExtension builds with __CUDA_NO_HALF_CONVERSIONS__ and
// __CUDA_NO_BFLOAT16_CONVERSIONS__, so implicit __half -> float conversions do not compile there.
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// Runtime-typed load, for small inputs (a query row) where one more template parameter would
// multiply the kernel instantiations for nothing.
enum FloatCode : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

inline FloatCode float_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return kF32;
    case at::kHalf: return kF16;
    case at::kBFloat16: return kBF16;
    default: TORCH_CHECK(false, "dyrate: unsupported floating dtype ", t);
  }
}

__device__ __forceinline__ float load_as_float(const void* p, int code, int64_t i) {
  if (code == kF16) return __half2float(static_cast<const __half*>(p)[i]);
  if (code == kBF16) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  return static_cast<const float*>(p)[i];
}

// Host dispatch on fp32/fp16/bf16 to the native CUDA types (not c10::Half/BFloat16, whose
// conversions are disabled by the same macros): f(TypeTag<T>{}) with T the element type.
template <typename T>
struct TypeTag {
  using type = T;
};

template <typename F>
void dispatch_float(at::ScalarType t, F&& f) {
  switch (float_code(t)) {
    case kF32: f(TypeTag<float>{}); break;
    case kF16: f(TypeTag<__half>{}); break;
    case kBF16: f(TypeTag<__nv_bfloat16>{}); break;
  }
}

// Sum over aligned groups of `Width` lanes; every lane of the group gets the total. Must be
// called by all 32 lanes of the warp (full mask).
template <int Width>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int off = Width / 2; off > 0; off >>= 1) v += __shfl_xor_sync(kFullMask, v, off);
  return v;
}

__device__ __forceinline__ float warp_sum(float v) { return group_sum<32>(v); }

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, off));
  return v;
}

__device__ __forceinline__ int warp_inclusive_scan(int v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const int n = __shfl_up_sync(kFullMask, v, off);
    if (lane >= off) v += n;
  }
  return v;
}

// Exclusive prefix sum over a 1-D block of kThreads threads (all must call it; the caller's loop
// must be block-uniform). `scratch` holds kThreads / 32 ints. Ends with a barrier, so the same
// scratch can be reused by the next call right away.
template <int kThreads>
__device__ __forceinline__ int block_exclusive_scan(int v, int* scratch, int& total) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps only");
  constexpr int kWarps = kThreads / 32;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int incl = warp_inclusive_scan(v);
  if (lane == 31) scratch[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    const int w = lane < kWarps ? scratch[lane] : 0;
    const int w_incl = warp_inclusive_scan(w);  // every lane has read before any lane writes
    if (lane < kWarps) scratch[lane] = w_incl;
  }
  __syncthreads();
  const int before = warp > 0 ? scratch[warp - 1] : 0;
  total = scratch[kWarps - 1];
  __syncthreads();
  return before + incl - v;
}

// Order-preserving map of a float to uint32 for descending selection: a larger float gives a
// larger key; -0.0 and +0.0 give the same key; every NaN gives 0, below -inf (0x007fffff).
// Integer tests only, so no compiler flag about signed zeros or NaN can change the result.
__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t u = __float_as_uint(f);
  const uint32_t mag = u & 0x7fffffffu;
  if (mag > 0x7f800000u) return 0u;           // NaN
  if (mag == 0u) return 0x80000000u;          // -0.0 and +0.0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Host: 16-byte vector loads along the last dim are aligned for every row of t (the data
// pointer, the row length and every other stride in bytes are multiples of 16).
inline bool rows_aligned16(const at::Tensor& t) {
  const int64_t es = t.element_size();
  if (reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 != 0 || (t.size(-1) * es) % 16 != 0)
    return false;
  for (int64_t d = 0; d + 1 < t.dim(); ++d) {
    if (t.size(d) > 1 && (t.stride(d) * es) % 16 != 0) return false;
  }
  return true;
}

}  // namespace cuda
}  // namespace dyrate
