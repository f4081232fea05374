"""Write the cpu-vllm preset's prompt token ids as JSON for run_vllm.py (run by the PROJECT's venv;
the vLLM venv does not have dyrate_engine, and must not need it).

    /work/main/.venv/bin/python python_bench/vllm_cpu/dump_prompts.py --batch 1,8,16 --out prompts.json

For each batch size B: the ids of ``make_prompts(PRESETS["cpu-vllm"], B, 1)`` (seed 1, as the
engine's e2e bench uses), each request's run of 576 image tokens collapsed to ONE image token,
which vLLM's LLaVA processor expands back to 576. ``full`` keeps the uncollapsed ids (609 each),
so run_vllm.py can check that vLLM's expanded prompt equals them.
"""
import argparse
import json

from dyrate_engine.bench.presets import PRESETS, make_prompts


def collapse(ids, image_id):
    """The ids with each run of image tokens replaced by one image token."""
    out = []
    for t in ids:
        if t == image_id and out and out[-1] == image_id:
            continue
        out.append(t)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", default="1,8,16")
    ap.add_argument("--preset", default="cpu-vllm")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    preset = PRESETS[args.preset]
    image_id = preset.image_token
    by_batch = {}
    for b in (int(x) for x in args.batch.split(",")):
        ids, _ = make_prompts(preset, b, 1)  # the pixel tensors are not used: vLLM gets PIL images
        full = [x.tolist() for x in ids]
        assert all(r.count(image_id) == preset.n_visual for r in full)
        by_batch[str(b)] = {"full": full, "collapsed": [collapse(r, image_id) for r in full]}
    json.dump({"preset": preset.name, "seed": 1, "image_token_id": image_id,
               "n_visual": preset.n_visual, "image_size": preset.vision["image_size"],
               "batches": by_batch}, open(args.out, "w"))
    b0 = next(iter(by_batch.values()))
    print(f"# wrote {args.out}: {len(b0['full'][0])} ids per request "
          f"({len(b0['collapsed'][0])} with one image token)")


if __name__ == "__main__":
    main()
