cd /work/main
date -u
.venv/bin/python -m dyrate_engine.cli train-predictor --model /work/scratch/demo_build/model --data /work/scratch/demo_build/data/mix-train.jsonl --out /work/scratch/demo_build/pred_lam0.05 --lam 0.05 --prune-layer 3 --steps 250 --batch-size 8 --ranking prefill --rates 0,0.25,0.5,0.6,0.65,0.7,0.75,0.9 --tau-end 0.1 > /work/scratch/demo_build/pred_lam0.05.log 2>&1
date -u
.venv/bin/python -m dyrate_engine.cli eval --model /work/scratch/demo_build/model --data demo-detail-val:50 --policy schedule:3:0.75 --dyrate /work/scratch/demo_build/pred_lam0.05 --no-attention --no-progress --out /work/scratch/demo_build/val_detail_lam0.05 > /work/scratch/demo_build/val_detail_lam0.05.txt 2>&1
date -u
