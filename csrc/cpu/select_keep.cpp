// CPU kernel of dyrate::select_keep: per row, a selection (nth_element, linear time) among the
// present tokens under the order "higher score first, NaN below every number, then lower index",
// which makes ties deterministic and identical to the CUDA kernel and the reference.
#include <ATen/Parallel.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../op_checks.h"
#include "simd.h"

namespace dyrate::cpu {
namespace {

template <typename S>
void select_keep_kernel(const at::Tensor& scores, const at::Tensor& present,
                        const at::Tensor& n_keep, at::Tensor& keep) {
  const int64_t B = scores.size(0), nv = scores.size(1);
  const S* score_ptr = scores.const_data_ptr<S>();
  const bool* present_ptr = present.const_data_ptr<bool>();
  const int64_t* n_keep_ptr = n_keep.const_data_ptr<int64_t>();
  bool* keep_ptr = keep.mutable_data_ptr<bool>();
  // The count check guards memory, so it always runs (outside the parallel region, so that the
  // error names the sequence); NaN scores are ordered, not refused (the wrapper's validate does).
  for (int64_t b = 0; b < B; ++b) {
    int64_t n_present = 0;
    for (int64_t j = 0; j < nv; ++j) n_present += present_ptr[b * nv + j];
    TORCH_CHECK(n_keep_ptr[b] >= 0 && n_keep_ptr[b] <= n_present, "dyrate.select_keep: n_keep[",
                b, "] = ", n_keep_ptr[b], " is outside [0, ", n_present, " present tokens]");
  }
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> candidates;
    for (int64_t b = begin; b < end; ++b) {
      const S* row = score_ptr + b * nv;
      const int64_t k = n_keep_ptr[b];
      if (k == 0) continue;
      candidates.clear();
      for (int64_t j = 0; j < nv; ++j)
        if (present_ptr[b * nv + j]) candidates.push_back(j);
      auto before = [row](int64_t i, int64_t j) {
        const float si = to_float(row[i]), sj = to_float(row[j]);
        const bool nan_i = std::isnan(si), nan_j = std::isnan(sj);
        if (nan_i || nan_j) return nan_i == nan_j ? i < j : nan_j;
        return si > sj || (si == sj && i < j);
      };
      if (k < static_cast<int64_t>(candidates.size()))
        std::nth_element(candidates.begin(), candidates.begin() + (k - 1), candidates.end(),
                         before);
      for (int64_t r = 0; r < k; ++r) keep_ptr[b * nv + candidates[r]] = true;
    }
  });
}

at::Tensor select_keep_cpu(const at::Tensor& scores, const at::Tensor& present,
                           const at::Tensor& n_keep) {
  check_select_keep(scores, present, n_keep);
  TORCH_CHECK(scores.device().is_cpu(), "dyrate.select_keep: CPU kernel got ", scores.device());
  const at::Tensor s = scores.contiguous(), p = present.contiguous(), n = n_keep.contiguous();
  at::Tensor keep = at::zeros(scores.sizes(), present.options());
  switch (s.scalar_type()) {
    case at::kFloat: select_keep_kernel<float>(s, p, n, keep); break;
    case at::kBFloat16: select_keep_kernel<c10::BFloat16>(s, p, n, keep); break;
    default: select_keep_kernel<c10::Half>(s, p, n, keep);
  }
  return keep;
}

}  // namespace
}  // namespace dyrate::cpu

TORCH_LIBRARY_IMPL(dyrate, CPU, m) { m.impl("select_keep", &dyrate::cpu::select_keep_cpu); }
