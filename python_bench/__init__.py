"""The benchmark suite of dyrate_engine (``dyrate bench e2e | ops | compare``), shipped with the
package so that the CLI works from any directory. The scripts here (``bench_ops.py``,
``bench_decode.py``, ``fastv_flops.py``) also run directly with ``python python_bench/NAME.py``."""
