#!/bin/bash
# Continuous vs static batching over HTTP on the save-preset cpu-vllm checkpoint (576 visual tokens),
# concurrency 16, 48 requests per policy, output lengths 16-512 (log-uniform, then uniform).
CK=${CK:-/work/scratch/ckpt_cpu_vllm}
PY=/work/main/.venv/bin/python
OUT=${OUT:-/work/scratch/serve2}
PORT=8124
run() {  # batching dist policies tag
  $PY -m dyrate_engine.cli serve --model $CK --policy schedule:3:0.75 --max-batch 16 --max-queue 64 \
      --port $PORT --batching $1 > $OUT/server_$4.log 2>&1 &
  SERVER=$!
  for i in $(seq 1 120); do curl -s http://127.0.0.1:$PORT/health > /dev/null && break; sleep 1; done
  $PY -m dyrate_engine.cli bench serve --url http://127.0.0.1:$PORT --requests 48 --concurrency 16 \
      --policies $3 --max-tokens 16:512 --length-dist $2 --json $OUT/$4.json \
      --plot $OUT/$4.png > $OUT/$4.txt 2>&1
  curl -s http://127.0.0.1:$PORT/metrics > $OUT/metrics_$4.txt
  kill $SERVER; wait $SERVER 2>/dev/null
}
date -u +%FT%TZ > $OUT/start
for pass in 1 2; do
  run continuous log-uniform "dense schedule:3:0.75" continuous_log_$pass
  run static log-uniform "dense schedule:3:0.75" static_log_$pass
done
run continuous uniform dense continuous_uniform_1
run static uniform dense static_uniform_1
date -u +%FT%TZ > $OUT/end
echo ALLDONE > $OUT/done
