// Makes the op library importable as `dyrate_engine._C`: importing it runs the TORCH_LIBRARY
// registrations. No Python bindings are needed; the ops are called through torch.ops.dyrate.
#include <Python.h>

PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "dyrate op library", -1, nullptr};
  return PyModule_Create(&module);
}
