"""``dyrate bench save-preset``: a LLaVA-family preset's random-weight model saved as a checkpoint
directory that ``Engine.from_pretrained`` and ``dyrate serve`` load, with a processor: a
word-level tokenizer of exactly the preset's vocabulary (``<pad>``, ``<s>``, ``</s>``, words
``w3 ...``, ``<image>`` last), a CLIP image processor at the tower's size and a plain chat
template. Serving benchmarks then run on the preset's shape (e.g. 576 visual tokens) from the
repository alone."""
from __future__ import annotations

import os

from .presets import Preset, build_model

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: "
    "{% endif %}{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n{% elif "
    "item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %} "
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def word_tokenizer(vocab_size: int, image_id: int):
    """Whitespace-split words ``w<id>`` over ids ``[0, vocab_size)``; unknown words read as
    ``<pad>`` (no id is free for an ``<unk>``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = {0: "<pad>", 1: "<s>", 2: "</s>", image_id: "<image>"}
    vocab = {specials.get(i, f"w{i}"): i for i in range(vocab_size)}
    words = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    words.decoder = decoders.WordPiece(prefix="##")  # joins the words with spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=words, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<pad>", extra_special_tokens={"image_token": "<image>"},
        model_max_length=4096)
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    if len(fast) != vocab_size or fast.convert_tokens_to_ids("<image>") != image_id:
        raise RuntimeError("the word-level tokenizer does not match the preset's vocabulary")
    return fast


def save_preset(preset: Preset, out: str, seed: int = 0) -> str:
    """Write ``preset``'s model (``build_model``, seeded) and its processor to ``out``."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    if preset.family != "llava":
        raise ValueError(f"save-preset writes LLaVA presets; {preset.name} is {preset.family}")
    model = build_model(preset, seed=seed)
    model.generation_config.eos_token_id = None  # random weights: answers end at max_tokens
    model.generation_config.do_sample = False
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out)
    size = preset.vision["image_size"]
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size},
        do_resize=True, do_center_crop=True, do_rescale=True, do_normalize=True,
        do_convert_rgb=True)
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=word_tokenizer(preset.vocab, preset.image_token),
        patch_size=preset.vision["patch_size"], vision_feature_select_strategy="default",
        image_token="<image>", num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(out)
    image_processor.save_pretrained(out)
    return out
