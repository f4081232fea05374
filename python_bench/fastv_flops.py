"""FastV's published prefill-FLOPs formula next to the engine's exact count, at LLaVA-1.5-7B shape.

    python python_bench/fastv_flops.py --prune-layer 2 --ratio 0.5
"""
from dyrate_engine.bench.fastv_flops import main

if __name__ == "__main__":
    main()
