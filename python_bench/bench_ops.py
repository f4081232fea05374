"""Microbenchmarks of the fused ops against their PyTorch references (``dyrate bench ops``).

    python python_bench/bench_ops.py --device cpu --batch 1 8 --json out/ops_cpu.json
"""
from dyrate_engine.bench.ops import main

if __name__ == "__main__":
    main()
