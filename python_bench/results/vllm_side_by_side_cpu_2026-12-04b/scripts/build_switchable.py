import torch, sys
from torch.utils.cpp_extension import load
load(name="ca_s9", sources=[sys.argv[1]], extra_cflags=["-O3", "-fopenmp"], extra_ldflags=["-fopenmp"], is_python_module=False, verbose=False, build_directory=sys.argv[2])
print("built")
