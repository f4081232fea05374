#!/bin/bash
cd /work/main
python3 python_bench/vllm_cpu/paired.py --vllm-python /work/vllm_env_new/venv/bin/python --model /work/vllm_env_new/ckpt --batch 1,8,16 --rounds 6 --new-tokens 64 --out /work/scratch/pair1/all > /work/scratch/pair1/all.txt 2>&1
python3 python_bench/vllm_cpu/paired.py --vllm-python /work/vllm_env_new/venv/bin/python --model /work/vllm_env_new/ckpt --batch 1 --rounds 20 --new-tokens 64 --out /work/scratch/pair1/b1 > /work/scratch/pair1/b1.txt 2>&1
echo ALLDONE > /work/scratch/pair1/done
