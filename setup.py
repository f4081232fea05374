"""Builds dyrate_engine._C: the CPU kernels always, the CUDA kernels when torch has CUDA and nvcc
is found. DYRATE_CUDA=0|1 overrides the detection. Install with
``pip install --no-build-isolation -e .`` so the build uses the torch that is installed.
"""
import glob
import os
import shutil

from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
import torch


def want_cuda() -> bool:
    forced = os.environ.get("DYRATE_CUDA")
    if forced in ("0", "1"):
        return forced == "1"
    has_nvcc = CUDA_HOME is not None or shutil.which("nvcc") is not None
    return torch.version.cuda is not None and has_nvcc


cpp_sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
# -fopenmp: at::parallel_for is inlined from the ATen headers and runs serially without it.
# The C++ standard is cpp_extension's choice.
cxx_flags = ["-O3", "-fvisibility=hidden", "-fopenmp"]
link_flags = ["-fopenmp"]
if want_cuda():
    extension = CUDAExtension(
        "dyrate_engine._C",
        cpp_sources + sorted(glob.glob("csrc/cuda/*.cu")),
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "--expt-relaxed-constexpr"]},
        extra_link_args=link_flags,
    )
else:
    extension = CppExtension("dyrate_engine._C", cpp_sources, extra_compile_args={"cxx": cxx_flags},
                             extra_link_args=link_flags)

setup(
    ext_modules=[extension],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
