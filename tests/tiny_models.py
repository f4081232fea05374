"""Tiny random-weight LLaVA checkpoints saved to disk, for engine tests (no downloads)."""
from __future__ import annotations

import torch
from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig,
                          LlavaForConditionalGeneration, MistralConfig, Qwen2Config)

IMAGE_TOKEN = 127
VOCAB = 128
IMAGE_SIZE, PATCH = 28, 7
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH) ** 2  # "default" strategy drops CLS

TEXT_CONFIGS = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}


def build_tiny_llava(directory, kind="llama", *, kv_heads=2, heads=4, layers=3, seed=0, **text_kw):
    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv_heads,
                  max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                  rms_norm_eps=1e-5)
    common.update(text_kw)
    text = TEXT_CONFIGS[kind](**common)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=PATCH)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN,
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         tie_word_embeddings=text.tie_word_embeddings)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    randomise(model)
    model.save_pretrained(directory)
    return directory


def randomise(model):
    """Larger text-model weights than the init: a less degenerate random model."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "language_model" in name and p.dim() == 2:
                p.normal_(0, 0.15)
            elif "language_model" in name and name.endswith("bias"):
                p.normal_(0, 0.1)


def random_prompts(n, seed=1, lengths=(3, 9, 5), tails=(4, 1, 7)):
    """Ragged prompts ``[bos, text..., image tokens..., text...]`` and their images."""
    g = torch.Generator().manual_seed(seed)
    text = lambda k: torch.randint(3, IMAGE_TOKEN, (k,), generator=g)  # noqa: E731
    ids = [torch.cat([torch.tensor([1]), text(lengths[i % 3]),
                      torch.full((TOKENS_PER_IMAGE,), IMAGE_TOKEN), text(tails[i % 3])])
           for i in range(n)]
    return ids, torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)


def multi_image_prompts(images_per_prompt, seed=2):
    """Ragged prompts holding several images each, text between them (``[bos, text, image, text,
    image, ..., text]``), and every prompt's images in order ``[sum, 3, S, S]``."""
    g = torch.Generator().manual_seed(seed)
    text = lambda k: torch.randint(3, IMAGE_TOKEN, (k,), generator=g)  # noqa: E731
    image = torch.full((TOKENS_PER_IMAGE,), IMAGE_TOKEN)
    ids = []
    for b, n in enumerate(images_per_prompt):
        parts = [torch.tensor([1]), text(2 + b)]
        for i in range(n):
            parts += [image, text(1 + (b + i) % 3)]
        ids.append(torch.cat(parts))
    pixels = torch.randn(sum(images_per_prompt), 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    return ids, pixels


def hf_greedy(model, ids, pixels, max_new_tokens, **vision):
    """transformers' greedy generate on a left-padded batch: (new tokens per row, logits per row).
    ``vision``: the family's other vision tensors (e.g. image_sizes)."""
    width = max(len(x) for x in ids)
    input_ids = torch.zeros(len(ids), width, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, x in enumerate(ids):
        input_ids[i, width - len(x):] = x
        mask[i, width - len(x):] = 1
    if "mm_token_type_ids" in vision:  # Qwen-VL: per-token modality, padded like the ids
        types = torch.zeros_like(input_ids)
        for i, t in enumerate(vision["mm_token_type_ids"]):
            types[i, width - len(t):] = t
        vision = {**vision, "mm_token_type_ids": types}
    if pixels is not None:  # None: video only (transformers would run the image tower on None)
        vision = {**vision, "pixel_values": pixels}
    out = model.generate(input_ids=input_ids, attention_mask=mask, **vision,
                         max_new_tokens=max_new_tokens, do_sample=False,
                         return_dict_in_generate=True, output_logits=True)
    tokens, logits = [], []
    for i in range(len(ids)):
        row = out.sequences[i, width:].tolist()
        n = row.index(2) + 1 if 2 in row else len(row)  # up to and including EOS
        tokens.append(row[:n])
        logits.append(torch.stack([step[i] for step in out.logits[:n]]).float())
    return tokens, logits


def tiny_vocabulary() -> dict[str, int]:
    """Words whose ids fit the tiny models: <image> is IMAGE_TOKEN, VOCAB words in all."""
    from dyrate_engine.demo.processor import SPECIALS

    words = ["USER:", "ASSISTANT:", "What", "is", "this?", "Describe", "the", "image."]
    words += [f"w{i}" for i in range(IMAGE_TOKEN - len(SPECIALS) - len(words))]
    vocab = {t: i for i, t in enumerate(SPECIALS + words)}
    vocab["<image>"] = IMAGE_TOKEN
    return vocab


def build_tiny_processor(directory):
    """A real LlavaProcessor (word-level tokenizer, CLIP image processor, chat template) whose
    ids fit the tiny model."""
    from dyrate_engine.demo.processor import word_level_processor

    word_level_processor(tiny_vocabulary(), IMAGE_SIZE, PATCH).save_pretrained(directory)
    return directory
