"""FLOPs saved on the detail test answers by keeping every visual token at the prefill and
dropping them all from decode step S on (layers >= K), against the prefill-only rates."""
import statistics
from dyrate_engine.demo.processor import build_processor, chat_prompt
from dyrate_engine.data.scenes import make_scene
from dyrate_engine import Engine
from dyrate_engine.models import flops

engine = Engine.from_pretrained("demo")
dec, L = engine.decoder, engine.decoder.n_layers
proc = build_processor()
K = 3
for start in (1, 20, 40):
    saved = []
    for i in range(100):
        s = make_scene("test", i, "detail")
        P = len(proc.tokenizer(chat_prompt(proc, s.prompt))["input_ids"]) - 1 + 144
        A = len(s.answer().split()) + 1
        dense = flops.prefill_flops(dec, [P] * L) + sum(flops.decode_flops(dec, [P + t] * L) for t in range(1, A))
        late = flops.prefill_flops(dec, [P] * L) + sum(
            flops.decode_flops(dec, [P + t] * K + [P + t - (144 if t >= start else 0)] * (L - K))
            for t in range(1, A))
        saved.append(1 - late / dense)
    print(f"detail K=3, all visual tokens kept at the prefill, all dropped from decode step {start}: FLOPs saved {statistics.mean(saved):.1%}")
