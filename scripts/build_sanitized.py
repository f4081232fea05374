"""Builds dyrate_engine's extension with AddressSanitizer and UndefinedBehaviorSanitizer into the
directory given (for scripts/sanitize.sh); the CUDA kernels are left out (CPU kernels only)."""
import glob
import sys

from torch.utils.cpp_extension import load

FLAGS = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=all", "-fopenmp"]

if __name__ == "__main__":
    module = load(name="_C", sources=sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp")),
                  extra_cflags=FLAGS, extra_ldflags=["-fsanitize=address,undefined", "-fopenmp"],
                  build_directory=sys.argv[1], verbose=False)
    print(f"built {module.__file__}: CPU kernels on {module.cpu_isa()}")
