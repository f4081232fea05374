#!/bin/bash
# Alternating processes: vLLM, ours before, ours after; twice.
R=${R:-/work/scratch/sbs2}
mkdir -p $R
for pass in 1 2; do
  (cd /work/vllm_env && venv/bin/python run_vllm.py --batch 1,8,16 --rounds 3 --new-tokens 64 --out $R/vllm_$pass.json > $R/vllm_$pass.log 2>&1)
  /work/scratch/run_ours.sh before $R/before_$pass 3 > $R/before_$pass.log 2>&1
  /work/scratch/run_ours.sh after $R/after_$pass 3 > $R/after_$pass.log 2>&1
done
echo ALLDONE > $R/done
