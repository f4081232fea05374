"""A copy of csrc/cpu/causal_attention.cpp (from stdin) whose query block and parts are set at run
time, registered as s9::causal_attention and s9::set_block(block + 1000 * mode): mode 0 runs it all,
1 skips the softmax, 2 skips the logits' GEMM, 3 runs the softmax only, 4 the logits' GEMM only. Write it next to a copy of csrc/cpu/
(it includes attention_math.h and ../op_checks.h), then build_switchable.py SRC BUILD_DIR.

    git show 650c077:csrc/cpu/causal_attention.cpp | python make_switchable.py > /tmp/s9/csrc/cpu/ca_s9.cpp
"""
import re
import sys

s = sys.stdin.read()
s = s.replace("constexpr int64_t kQueryBlock = 64;", "int64_t kQueryBlock = 64; int64_t kMode = 0;")
s = re.sub(r"(\n  )(gemm_rows\(rows, n, D, s\.scale)", r"\1if (kMode != 2 && kMode != 3) \2", s)
s = re.sub(r"(\n  )(softmax_rows\(w\.logits\.data\(\)[^;]*;)",
           r"\1if (kMode != 1 && kMode != 4) \2\n  if (kMode == 3 || kMode == 4) return;", s)
s = re.sub(r"TORCH_LIBRARY_IMPL\(dyrate, CPU, m\) \{.*?\n\}", '''void set_block(int64_t b) {
  dyrate::cpu::kQueryBlock = b % 1000;
  dyrate::cpu::kMode = b / 1000;
}
TORCH_LIBRARY(s9, m) {
  m.def("causal_attention(Tensor q, Tensor k, Tensor v, float? scale) -> Tensor",
        &dyrate::cpu::causal_attention_cpu);
  m.def("set_block(int b) -> ()", &set_block);
}''', s, flags=re.S)
sys.stdout.write(s)
