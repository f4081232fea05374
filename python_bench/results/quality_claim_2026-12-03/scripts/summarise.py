# One line per policy of a `dyrate eval` results.json: CIDEr vs dense, FLOPs and KV read saved,
# and the visual tokens kept at a few decode steps (the trajectory of a per-step rate).
import json, sys
report = json.load(open(sys.argv[1]))
rows = report["policies"]
dense = next(r for r in rows if r["family"] == "dense")["cider"]
steps = [0, 1, 5, 10, 20, 40, 80, 120]
print(f"{report['data']}: {report['images']} images; kept visual at steps {steps}")
for r in rows:
    kept = r.get("kept_visual_by_step", [])
    at = " ".join(f"{kept[s]:5.1f}" if s < len(kept) else "    -" for s in steps)
    print(f"{r['label'][:58]:58s} {100 * r['cider'] / dense:6.1f}%  FLOPs {100 * r['flops_reduction']:5.1f}%"
          f"  KV {100 * r['kv_read_reduction']:5.1f}%  {r['tokens_per_s']:7.0f} tok/s | {at}")
