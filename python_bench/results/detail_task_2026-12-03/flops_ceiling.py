"""FLOPs saved by pruning every visual token from layer K on, at the prefill, over the detail
and caption test answers (the reference lengths), with the demo model's decoder shape."""
import statistics
from dyrate_engine.demo.processor import build_processor, chat_prompt
from dyrate_engine.data.scenes import make_scene
from dyrate_engine import Engine
from dyrate_engine.models import flops

engine = Engine.from_pretrained("demo")
dec, L = engine.decoder, engine.decoder.n_layers
proc = build_processor()
for task in ("caption", "detail"):
    for K in (1, 2, 3):
        for rate in (0.5, 0.75, 0.9, 1.0):
            saved = []
            for i in range(100):
                s = make_scene("test", i, task)
                P = len(proc.tokenizer(chat_prompt(proc, s.prompt))["input_ids"]) - 1 + 144
                A = len(s.answer().split()) + 1
                d = int(144 * rate + 1e-9)
                dense = flops.prefill_flops(dec, [P] * L) + sum(
                    flops.decode_flops(dec, [P + t] * L) for t in range(1, A))
                pruned = flops.prefill_flops(dec, [P] * K + [P - d] * (L - K)) + sum(
                    flops.decode_flops(dec, [P + t] * K + [P + t - d] * (L - K)) for t in range(1, A))
                saved.append(1 - pruned / dense)
            print(f"{task:8s} K={K} rate {rate:<4}: FLOPs saved {statistics.mean(saved):.1%}")
