"""The benchmark workloads: LLaVA-shaped models with random weights, and ragged prompts.

A preset fixes the model shape, dtype, device and prompt layout; ``build_model`` makes the
``LlavaForConditionalGeneration`` (seeded, eval, EOS disabled so every sequence runs the full
length) directly on the preset's device and dtype, and ``make_prompts`` makes B ragged prompts
``[bos, text, image tokens, text]`` with random pixel values. The engine wraps the same module
(``Engine(LlavaModel(hf_model))``), so the engine and transformers run the same weights on the
same prompts.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

BOS, PAD = 1, 0


@dataclass(frozen=True)
class Preset:
    name: str
    about: str
    text: dict  # LlamaConfig fields
    vision: dict  # CLIPVisionConfig fields
    vision_feature_layer: int = -1
    dtype: str = "float32"
    device: str = "cpu"
    batches: tuple[int, ...] = (1, 16)
    new_tokens: int = 16
    repeats: int = 3
    prefix: tuple[int, int] = (19, 3)  # text before the image: prefix[0] + b % prefix[1] tokens
    suffix: tuple[int, int] = (13, 5)  # text after the image: suffix[0] + b % suffix[1] tokens
    bandwidth_mib: int = 1024  # buffer of the copy-bandwidth measure (far larger than the caches)

    @property
    def vocab(self) -> int:
        return self.text["vocab_size"]

    @property
    def image_token(self) -> int:
        return self.vocab - 1

    @property
    def n_visual(self) -> int:  # the "default" strategy drops CLS
        return (self.vision["image_size"] // self.vision["patch_size"]) ** 2

    def shape(self) -> str:
        t = self.text
        heads, kv = t["num_attention_heads"], t["num_key_value_heads"]
        attention = "MHA" if kv == heads else f"{kv} KV heads"
        return (f"Llama {t['hidden_size']} x {t['num_hidden_layers']} layers, {heads} heads "
                f"({attention}), MLP {t['intermediate_size']}, vocab {t['vocab_size']}; "
                f"{self.n_visual} visual tokens")


def _llama(vocab, hidden, inter, layers, heads, kv_heads, max_pos):
    return dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                max_position_embeddings=max_pos, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=2,
                rms_norm_eps=1e-5)


PRESETS = {p.name: p for p in [
    Preset("tiny", "seconds on a CPU: smoke tests and dry runs",
           text=_llama(512, 64, 128, 6, 4, 2, 512),
           vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=4, image_size=56, patch_size=7),
           batches=(1, 4), new_tokens=8, repeats=3, prefix=(5, 3), suffix=(4, 3),
           bandwidth_mib=256),
    # The shape of bench_decode.py's results: the vision tower is tiny (it runs once per call and
    # is not what is measured) but makes the real 576 visual tokens (336 px, patch 14).
    Preset("cpu", "LLaVA-shaped text model that fits the 2-core development CPU",
           text=_llama(32000, 768, 2048, 12, 12, 12, 2048),
           vision=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                       num_attention_heads=4, image_size=336, patch_size=14),
           batches=(1, 16), new_tokens=16, repeats=4),
    # llava-hf/llava-1.5-7b-hf: Vicuna-7B (Llama 4096 x 32, MHA, MLP 11008) and CLIP ViT-L/14 at
    # 336 px (feature layer -2), random weights; ~35 system tokens before the image as in the
    # LLaVA-1.5 chat template, a short question after it (~640-token prompts).
    Preset("llava-1.5-7b", "LLaVA-1.5-7B at its real shape, random bf16 weights, for a GPU",
           text=_llama(32000, 4096, 11008, 32, 32, 32, 4096),
           vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                       num_attention_heads=16, image_size=336, patch_size=14),
           vision_feature_layer=-2, dtype="bfloat16", device="cuda", batches=(1, 8, 32),
           new_tokens=32, repeats=3, prefix=(34, 3), suffix=(27, 5)),
]}


def build_model(preset: Preset, device=None, dtype=None, seed=0):
    """The preset's ``LlavaForConditionalGeneration`` with random weights, built on ``device`` in
    ``dtype`` (no CPU copy of a 7B model first). EOS is unset in the generation config: every
    sequence runs the full length."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(vision_config=CLIPVisionConfig(**preset.vision),
                         text_config=LlamaConfig(**preset.text),
                         image_token_index=preset.image_token,
                         vision_feature_layer=preset.vision_feature_layer,
                         vision_feature_select_strategy="default")
    dtype = getattr(torch, dtype or preset.dtype)
    torch.manual_seed(seed)
    with torch.device(device or preset.device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype).eval()
    # generate() fills a None it is *passed* from the model's generation_config, so unset there.
    model.generation_config.eos_token_id = None
    return model


def make_prompts(preset: Preset, batch: int, seed=1):
    """Ragged ``[bos, text, image tokens, text]`` per sequence (CPU int64), and random images
    ``[B, 3, H, W]`` fp32 on the CPU."""
    g = torch.Generator().manual_seed(seed)
    text = lambda k: torch.randint(3, preset.image_token, (k,), generator=g)  # noqa: E731
    (p0, pm), (s0, sm) = preset.prefix, preset.suffix
    ids = [torch.cat([torch.tensor([BOS]), text(p0 + b % pm),
                      torch.full((preset.n_visual,), preset.image_token), text(s0 + b % sm)])
           for b in range(batch)]
    size = preset.vision["image_size"]
    return ids, torch.randn(batch, 3, size, size, generator=g)


def left_pad(ids):
    """transformers' batch layout: ``input_ids`` and ``attention_mask`` ``[B, max len]``."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), PAD, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, x in enumerate(ids):
        input_ids[i, width - len(x):] = x
        mask[i, width - len(x):] = 1
    return input_ids, mask


def decoder_weight_bytes(hf, batch: int) -> int:
    """Bytes of weights one decode step of ``batch`` sequences must read: every text-model
    parameter, the final norm and the lm_head; of the embedding table only the B rows gathered."""
    lm = hf.model.language_model
    embed = lm.embed_tokens.weight
    weights = sum(p.numel() * p.element_size() for name, p in lm.named_parameters()
                  if not name.startswith("embed_tokens"))
    if hf.lm_head.weight.data_ptr() != embed.data_ptr():
        weights += hf.lm_head.weight.numel() * hf.lm_head.weight.element_size()
    return weights + batch * embed.shape[1] * embed.element_size()


def kv_bytes_per_token(hf) -> int:
    """Bytes of keys and values one token occupies in one layer."""
    t = hf.config.text_config
    head_dim = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
    return 2 * (t.num_key_value_heads or t.num_attention_heads) * head_dim * hf.dtype.itemsize
