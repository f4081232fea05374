"""The benchmark library behind ``dyrate bench e2e | ops | compare | pool``: workloads (``presets``),
timed calls (``runners``, ``timing``), the end-to-end suite (``contenders``, ``e2e``), the op
microbenchmarks (``ops``), reports, agreement of two runs and pooled ratios. The scripts in the
repository's ``python_bench/`` folder build on it."""
