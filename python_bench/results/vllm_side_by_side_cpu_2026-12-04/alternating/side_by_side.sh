#!/bin/bash
# Alternating processes: vLLM, then the engine; twice.
R=/work/scratch/sbs6
cd /work/main
for pass in 1 2; do
  /work/vllm_env_new/venv/bin/python python_bench/vllm_cpu/run_vllm.py --model /work/vllm_env_new/ckpt --batch 1,8,16 --rounds 3 --new-tokens 64 --out $R/vllm_$pass.json > $R/vllm_$pass.log 2>&1
  .venv/bin/dyrate bench e2e --preset cpu-vllm --policies dense schedule:3:0.75 --repeats 3 --threads 2 --no-plots --no-progress --out $R/after_$pass > $R/after_$pass.log 2>&1
done
echo ALLDONE > $R/done
