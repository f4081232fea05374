#!/bin/bash
# Continuous vs static batching, Dense vs Schedule(0.75), on the cpu-vllm checkpoint (576 visual
# tokens), concurrency 16, 32 requests per policy, output lengths 16-128.
CK=${CK:-/work/vllm_env/ckpt}
PY=/work/main/.venv/bin/python
OUT=${OUT:-/work/scratch/serve1}
PORT=8123
mkdir -p $OUT
for pass in 1 2; do
for batching in continuous static; do
  $PY -m dyrate_engine.cli serve --model $CK --policy schedule:3:0.75 --max-batch 16 --max-queue 64 \
      --port $PORT --batching $batching > $OUT/server_${batching}_$pass.log 2>&1 &
  SERVER=$!
  for i in $(seq 1 120); do curl -s http://127.0.0.1:$PORT/health > /dev/null && break; sleep 1; done
  $PY -m dyrate_engine.cli bench serve --url http://127.0.0.1:$PORT --requests 32 --concurrency 16 \
      --policies dense schedule:3:0.75 --max-tokens 16:128 --json $OUT/${batching}_$pass.json \
      > $OUT/${batching}_$pass.txt 2>&1
  curl -s http://127.0.0.1:$PORT/metrics > $OUT/metrics_${batching}_$pass.txt
  kill $SERVER; wait $SERVER 2>/dev/null
done
done
echo ALLDONE > $OUT/done
