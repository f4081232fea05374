r"""Trains the demo VLM from scratch on the synthetic scenes and saves it as an HF LLaVA
checkpoint with its processor.

    python -m dyrate_engine.demo.train_vlm --out dyrate_engine/demo/model --steps 1800 \
        --prune-layer 3 --drop-rates 0,0.25,0.5,0.6,0.75,0.9

The whole model learns (vision tower, projector, text model) with the answer tokens as targets, on
a mix of the scenes' two tasks (``--detail-share`` of each batch is the long-answer task).
``--prune-layer`` puts the engine's prefill pruning in the loop (``token_drop``), each scene at a
random rate, so that the model survives pruning as large pretrained VLMs do. The bundled model is
the command above with ``--detail-share 0`` (captions only): one run from scratch, 62 minutes on
the 2-core dev CPU (python_bench/RESULTS.md has the record). ``--init`` continues from a checkpoint with new scenes (a second stage).
``--resume`` continues a run cut short from its last checkpoint (every 250 steps), ending with
the weights the uninterrupted run would have.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..data.scenes import IMAGE_SIZE, make_scene
from ..deprecation import DeprecatedFlag
from .processor import PATCH, build_processor, chat_prompt, pixel_values
from .token_drop import IGNORE, VisualTokenDrop
from .train_state import clear_state, load_state, read_progress, save_state

# The pruning rates of the bundled model's training (one drawn per scene).
DROP_RATES = (0.0, 0.25, 0.5, 0.6, 0.75, 0.9)
# The share of each batch drawn from the long-answer ``detail`` task (the rest are captions).
DETAIL_SHARE = 0.5


def scene_batch(split: str, first: int, batch_size: int, detail_share: float) -> list:
    """Scenes ``first .. first + batch_size - 1`` of ``split``: the first ``round(batch_size *
    detail_share)`` from the detail task, the rest captions (each task has its own stream)."""
    n_detail = round(batch_size * detail_share)
    return [make_scene(split, first + i, "detail" if i < n_detail else "caption")
            for i in range(batch_size)]


def demo_config(vocab_size: int, image_token_id: int, text_layers: int = 8,
                text_width: int = 192):
    """A small LLaVA: CLIP-style tower (96 px, patch 8 -> 144 visual tokens), LLaVA's MLP
    projector, a GQA Llama text model with enough layers after the monitor layer to prune.
    ``text_width``: hidden size, a multiple of 64 (heads of 32, two key heads, MLP 8/3 wide)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    if text_width < 64 or text_width % 64:
        raise ValueError(f"text width must be a positive multiple of 64, got {text_width}")
    mlp_width = round(text_width * 8 / 3 / 32) * 32

    vision = CLIPVisionConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                              num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=PATCH)
    text = LlamaConfig(vocab_size=vocab_size, hidden_size=text_width, intermediate_size=mlp_width,
                       num_hidden_layers=text_layers, num_attention_heads=text_width // 32,
                       num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0,
                       bos_token_id=1, eos_token_id=2, rms_norm_eps=1e-5, tie_word_embeddings=False)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token_id,
                       vision_feature_layer=-2, vision_feature_select_strategy="default",
                       projector_hidden_act="gelu", tie_word_embeddings=False)


class SceneEncoder:
    """Scenes -> model inputs with answer-only labels, without the processor's per-call cost (the
    ids are exactly what the processor makes: checked in tests)."""

    def __init__(self, processor, tokens_per_image: int):
        self.tokenizer = processor.tokenizer
        self.image_id = self.tokenizer.convert_tokens_to_ids("<image>")
        self.tokens_per_image = tokens_per_image
        self.processor = processor
        self._prompt_cache: dict[str, list[int]] = {}

    def prompt_ids(self, prompt: str) -> list[int]:
        if prompt not in self._prompt_cache:
            ids = self.tokenizer(chat_prompt(self.processor, prompt))["input_ids"]
            at = ids.index(self.image_id)
            self._prompt_cache[prompt] = (ids[:at] + [self.image_id] * self.tokens_per_image
                                          + ids[at + 1:])
        return self._prompt_cache[prompt]

    def answer_ids(self, answer: str) -> list[int]:
        return self.tokenizer(answer, add_special_tokens=False)["input_ids"] + [
            self.tokenizer.eos_token_id]

    def batch(self, scenes):
        rows = [(self.prompt_ids(s.prompt), self.answer_ids(s.answer())) for s in scenes]
        width = max(len(p) + len(a) for p, a in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id)
        labels = torch.full((len(rows), width), IGNORE)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (p, a) in enumerate(rows):  # right padding: training only, positions unaffected
            ids[i, :len(p) + len(a)] = torch.tensor(p + a)
            labels[i, len(p):len(p) + len(a)] = torch.tensor(a)
            mask[i, :len(p) + len(a)] = 1
        return dict(input_ids=ids, attention_mask=mask, labels=labels,
                    pixel_values=pixel_values([s.render() for s in scenes]))


def lr_at(step: int, total: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def validation_loss(model, encoder, n: int = 128, batch_size: int = 32,
                    detail_share: float = DETAIL_SHARE) -> float:
    model.eval()
    losses = []
    for start in range(0, n, batch_size):
        scenes = scene_batch("val", start, min(batch_size, n - start), detail_share)
        losses.append(float(model(**encoder.batch(scenes)).loss))
    model.train()
    return sum(losses) / len(losses)


def _model(processor, init: Path | None, text_layers: int, text_width: int):
    """A new demo LLaVA, or the checkpoint ``init`` to continue from."""
    from transformers import LlavaForConditionalGeneration

    vocab = processor.tokenizer.get_vocab()
    if init is None:
        model = LlavaForConditionalGeneration(
            demo_config(len(vocab), vocab["<image>"], text_layers, text_width))
    else:
        model = LlavaForConditionalGeneration.from_pretrained(init, dtype=torch.float32)
        size = model.config.text_config.vocab_size
        if (size, model.config.image_token_id) != (len(vocab), vocab["<image>"]):
            raise ValueError(f"{init} was trained with another vocabulary ({size} ids, <image> "
                             f"{model.config.image_token_id}) than the scenes' words now make "
                             f"({len(vocab)} ids, <image> {vocab['<image>']}): train from "
                             f"scratch")
    model.config._attn_implementation = "sdpa"
    return model


def _step(model, optimizer, parts: list[dict], drop) -> float:
    """One optimiser step on a batch given as parts (one per task, so that short captions are
    not padded to the long answers' width); returns the batch's loss: the mean over all its
    answer tokens, as one padded batch would give."""
    optimizer.zero_grad(set_to_none=True)
    counts = [int((p["labels"] != IGNORE).sum()) for p in parts]
    total = 0.0
    for inputs, count in zip(parts, counts):
        if isinstance(drop, VisualTokenDrop):
            drop.set_batch(inputs["input_ids"], inputs["labels"], inputs["attention_mask"])
        # Right padding under a causal mask: no real token sees a pad, and pads carry no label,
        # so the padding mask changes nothing but keeps SDPA off its faster causal path.
        inputs.pop("attention_mask")
        with drop:
            loss = model(**inputs).loss * (count / sum(counts))
        loss.backward()
        total += loss.item()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return total


def task_parts(encoder: SceneEncoder, scenes: list) -> list[dict]:
    """``encoder.batch`` of each task's scenes, in the order the tasks first appear."""
    tasks = dict.fromkeys(s.task for s in scenes)
    return [encoder.batch([s for s in scenes if s.task == task]) for task in tasks]


def train(out: Path, steps: int, batch_size: int = 32, lr: float = 1.5e-3, seed: int = 0,
          text_layers: int = 8, init: Path | None = None, prune_layer: int | None = None,
          drop_rates=DROP_RATES, first_scene: int = 0,
          text_width: int = 192, detail_share: float = DETAIL_SHARE, *, resume: bool = False,
          save_every: int = 250) -> dict:
    """Train and save to ``out`` every ``save_every`` steps (weights and the run's state);
    ``resume`` continues the run saved in ``out`` (same arguments) from its last checkpoint."""
    run = dict(steps=steps, batch_size=batch_size, lr=lr, seed=seed, text_layers=text_layers,
               init=str(init) if init else None, prune_layer=prune_layer,
               drop_rates=[float(r) for r in drop_rates], first_scene=first_scene,
               text_width=text_width, detail_share=detail_share)
    torch.manual_seed(seed)
    processor = build_processor()
    model = _model(processor, out if resume else init, text_layers, text_width)
    generator = torch.Generator().manual_seed(seed)
    drop = contextlib.nullcontext()
    if prune_layer is not None:
        drop = VisualTokenDrop(model, prune_layer, drop_rates, model.config.image_token_id,
                               generator)
    encoder = SceneEncoder(processor, (IMAGE_SIZE // PATCH) ** 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01,
                                  betas=(0.9, 0.98))
    done, log = load_state(out, model, optimizer, generator, run) if resume else (0, [])
    model.train()
    start = time.perf_counter() - (log[-1]["minutes"] * 60 if log else 0.0)
    bar = tqdm(range(done, steps), desc="demo VLM", unit="step", initial=done, total=steps)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup=min(100, steps // 10))
        scenes = scene_batch("train", first_scene + step * batch_size, batch_size, detail_share)
        loss = _step(model, optimizer, task_parts(encoder, scenes), drop)
        bar.set_postfix(loss=f"{loss:.3f}")
        if (step + 1) % save_every == 0 or step + 1 == steps:
            log.append({"step": step + 1, "train_loss": loss,
                        "val_loss": validation_loss(model, encoder, detail_share=detail_share),
                        "minutes": (time.perf_counter() - start) / 60})
            tqdm.write(json.dumps(log[-1]))
            model.save_pretrained(out)  # a usable checkpoint, and a resumable run
            processor.save_pretrained(out)
            save_state(out, model, optimizer, generator, step + 1, log, run)
    return _finish(out, model, processor, run, log, init)


def _finish(out: Path, model, processor, run: dict, log: list, init: Path | None) -> dict:
    model.generation_config.eos_token_id = model.config.text_config.eos_token_id
    model.save_pretrained(out)
    processor.save_pretrained(out)
    first = run["first_scene"]
    info = {**run, "train_scenes": [first, first + run["steps"] * run["batch_size"]],
            "log": log, "command": " ".join(["python -m dyrate_engine.demo.train_vlm"]
                                            + sys.argv[1:])}
    if run["prune_layer"] is None:
        info["drop_rates"] = None
    info = {"stages": earlier_stages(init) + [info]}
    (out / "training.json").write_text(json.dumps(info, indent=1))
    clear_state(out)  # last: a run killed before this point still resumes (and ends here)
    return info


def earlier_stages(init: Path | None) -> list[dict]:
    """The training records of a checkpoint (a record without ``stages`` is one stage)."""
    path = init / "training.json" if init is not None else None
    if path is None or not path.exists():
        return []
    info = json.loads(path.read_text())
    return info.get("stages", [info])


def scenes_seen(init: Path | None) -> int:
    """End of the training scene range [0, n) that a checkpoint's stages used (the first
    stage's record holds a count, later ones a [start, end) range)."""
    return max((s["train_scenes"][-1] if isinstance(s["train_scenes"], list) else s["train_scenes"]
                for s in earlier_stages(init)), default=0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=1800)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text-layers", type=int, default=8)
    parser.add_argument("--text-width", type=int, default=192,
                        help="hidden size of the text model, a multiple of 64 (new models only)")
    parser.add_argument("--init", type=Path, help="continue from this checkpoint")
    parser.add_argument("--prune-layer", type=int,
                        help="train with prefill pruning from this layer on (the engine's K)")
    parser.add_argument("--drop-layer", dest="prune_layer", type=int, action=DeprecatedFlag,
                        help=argparse.SUPPRESS)
    parser.add_argument("--drop-rates", default=",".join(map(str, DROP_RATES)),
                        help="rates drawn per scene with --prune-layer (comma-separated)")
    parser.add_argument("--detail-share", type=float, default=DETAIL_SHARE,
                        help="share of each batch from the long-answer detail task (0 to 1)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run saved in --out from its last checkpoint, with "
                             "that run's arguments (the others given here are not used)")
    parser.add_argument("--first-scene", type=int, default=None,
                        help="index of the first training scene (default: after the init's)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.resume:
        run = read_progress(args.out)["run"]
        given = {key: getattr(args, key) for key in run if key not in ("init", "first_scene")
                 and getattr(args, key) != parser.get_default(key)}
        if "drop_rates" in given:
            given["drop_rates"] = [float(r) for r in given["drop_rates"].split(",")]
        differ = sorted(key for key, value in given.items() if value != run[key])
        if differ:
            parser.error(f"--resume continues the saved run with its own arguments; these "
                         f"differ from it: {', '.join(differ)}")
        init = run.pop("init")
        train(args.out, init=Path(init) if init else None, resume=True, **run)
        return
    # A second stage sees new scenes, not the first stage's again.
    first = args.first_scene if args.first_scene is not None else scenes_seen(args.init)
    rates = [float(r) for r in args.drop_rates.split(",")]
    if not 0.0 <= args.detail_share <= 1.0:
        parser.error(f"--detail-share must be within [0, 1], got {args.detail_share}")
    train(args.out, args.steps, args.batch_size, args.lr, args.seed, args.text_layers,
          args.init, args.prune_layer, rates, first, args.text_width, args.detail_share)


if __name__ == "__main__":
    main()
