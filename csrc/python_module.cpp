// Makes the op library importable as `dyrate_engine._C`: importing it runs the TORCH_LIBRARY
// registrations. The ops are called through torch.ops.dyrate; the one Python function says which
// SIMD paths the CPU kernels run (benchmarks record it; tests check DYRATE_CPU_ISA took effect).
#include <Python.h>

#include "cpu/simd.h"

static PyObject* cpu_isa(PyObject*, PyObject*) {
  const char* name = dyrate::cpu::cpu_has_avx512() ? "avx512"
                     : dyrate::cpu::cpu_has_avx2() ? "avx2"
                                                   : "scalar";
  return PyUnicode_FromString(name);
}

static PyMethodDef methods[] = {
    {"cpu_isa", cpu_isa, METH_NOARGS, "The CPU kernels' SIMD path: avx512, avx2 or scalar."},
    {nullptr, nullptr, 0, nullptr}};

PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "dyrate op library", -1, methods};
  return PyModule_Create(&module);
}
