"""The demo model's processor: a word-level tokenizer over the scene vocabulary, a CLIP image
processor at 96 px, and a LLaVA-1.5 style chat template, saved as an ordinary HF LlavaProcessor so
the demo checkpoint loads through the same path as llava-hf/llava-1.5-7b-hf."""
from __future__ import annotations

import numpy as np
import torch

from ..data.scenes import IMAGE_SIZE, caption_words

PATCH = 8
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
ROLE_WORDS = ["USER:", "ASSISTANT:"]
# CLIP's normalisation, as CLIPImageProcessor applies it.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ '<image>\n' }}{% endif %}"
    "{% endfor %}{% for c in message['content'] %}{% if c['type'] == 'text' %}"
    "{{ c['text'] + ' ' }}{% endif %}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")


def vocabulary() -> dict[str, int]:
    """Token ids: the specials, the role words, the scene words, then ``<image>`` last."""
    words = SPECIALS + ROLE_WORDS + caption_words()
    vocab = {w: i for i, w in enumerate(words)}
    vocab["<image>"] = len(vocab)
    return vocab


def build_processor():
    """A fresh ``LlavaProcessor`` for the demo model (deterministic: same ids every time)."""
    return word_level_processor(vocabulary(), IMAGE_SIZE, PATCH)


def word_level_tokenizer(vocab: dict[str, int], image_token: str = "<image>",
                         specials: list[str] | None = None):
    """A whitespace word-level tokenizer over ``vocab`` (which holds ``SPECIALS``, the
    ``image_token`` and any other ``specials``), as a transformers fast tokenizer. Shared by the
    demo model and the tests' tiny models of every family."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # Join words with single spaces and leave " ." alone, so decoded text equals the caption.
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    extra = sorted(set([image_token] + (specials or [])))
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                  for t in SPECIALS + extra])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>",
                                   extra_special_tokens={"image_token": image_token},
                                   padding_side="left", add_bos_token=True)


def word_level_processor(vocab: dict[str, int], image_size: int, patch: int):
    """A real ``LlavaProcessor``: :func:`word_level_tokenizer`, a CLIP image processor at
    ``image_size`` and the LLaVA-1.5 style chat template."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    images = CLIPImageProcessor(size={"shortest_edge": image_size},
                                crop_size={"height": image_size, "width": image_size},
                                image_mean=list(MEAN), image_std=list(STD))
    return LlavaProcessor(image_processor=images, tokenizer=word_level_tokenizer(vocab),
                          patch_size=patch, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE)


def chat_prompt(processor, prompt: str) -> str:
    """The prompt text with the chat template applied (one image, one user turn)."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def pixel_values(images) -> torch.Tensor:
    """``[B, 3, 96, 96]`` fp32 exactly as the CLIP image processor makes them for 96 px RGB
    images (no resize or crop at that size); much faster for training batches."""
    array = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images]) / 255.0
    array = (array - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
