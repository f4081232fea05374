"""Tiny random-weight checkpoints of the AnyRes families (LLaVA-NeXT, LLaVA-OneVision), built with
each family's real config class and a real processor saved beside the weights (no downloads)."""
from __future__ import annotations

import torch
from transformers import CLIPVisionConfig

from tiny_models import IMAGE_TOKEN, TEXT_CONFIGS, VOCAB, randomise

TILE, PATCH = 28, 7
PINPOINTS = [[28, 56], [56, 28], [56, 56]]


def _text(kind, **kw):
    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2, rms_norm_eps=1e-5)
    return TEXT_CONFIGS[kind](**{**common, **kw})


def _vision():
    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, image_size=TILE, patch_size=PATCH)


def build_tiny_llava_next(directory, kind="llama", seed=0, **text_kw):
    return _build("LlavaNext", directory, kind, seed, text_kw)


def build_tiny_llava_onevision(directory, kind="qwen2", seed=0, **text_kw):
    return _build("LlavaOnevision", directory, kind, seed, text_kw,
                  video_token_index=IMAGE_TOKEN - 1, vision_aspect_ratio="anyres_max_9")


def _build(family, directory, kind, seed, text_kw, **config_kw):
    import transformers

    config = getattr(transformers, f"{family}Config")(
        vision_config=_vision(), text_config=_text(kind, **text_kw), image_token_index=IMAGE_TOKEN,
        image_grid_pinpoints=PINPOINTS, vision_feature_layer=-2,
        vision_feature_select_strategy="default", tie_word_embeddings=False, **config_kw)
    torch.manual_seed(seed)
    model = getattr(transformers, f"{family}ForConditionalGeneration")(config)
    randomise(model)
    model.save_pretrained(directory)
    _processor("next" if family == "LlavaNext" else "onevision").save_pretrained(directory)
    return directory


def _processor(which):
    import transformers

    from dyrate_engine.demo.processor import CHAT_TEMPLATE, MEAN, STD, word_level_tokenizer
    from tiny_models import tiny_vocabulary

    images = dict(size={"height": TILE, "width": TILE}, crop_size={"height": TILE, "width": TILE},
                  image_grid_pinpoints=PINPOINTS, image_mean=list(MEAN), image_std=list(STD),
                  do_center_crop=False)
    tokenizer = word_level_tokenizer(tiny_vocabulary())
    if which == "next":
        return transformers.LlavaNextProcessor(
            image_processor=transformers.LlavaNextImageProcessorPil(**images), tokenizer=tokenizer,
            patch_size=PATCH, vision_feature_select_strategy="default",
            num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE)
    from dyrate_engine.models.processors import without_video

    return without_video(
        transformers.LlavaOnevisionProcessor,
        image_processor=transformers.LlavaOnevisionImageProcessorPil(**images), tokenizer=tokenizer,
        num_image_tokens=(TILE // PATCH) ** 2 + 1,
        vision_feature_select_strategy="default", vision_aspect_ratio="anyres_max_9",
        chat_template=CHAT_TEMPLATE)


QWEN_SPECIALS = {"<|vision_start|>": IMAGE_TOKEN - 3, "<|vision_end|>": IMAGE_TOKEN - 2,
                 "<|video_pad|>": IMAGE_TOKEN - 1, "<|image_pad|>": IMAGE_TOKEN}
QWEN_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|> ' }}{% elif c['type'] == 'video' %}"
    "{{ '<|vision_start|><|video_pad|><|vision_end|> ' }}{% endif %}{% endfor %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] + ' ' }}"
    "{% endif %}{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}"
    "{% endif %}")


def build_tiny_qwen_vl(directory, family="qwen2_5_vl", seed=0):
    """A tiny Qwen2-VL / Qwen2.5-VL: 7 px patches merged 2 x 2, so an image of h x w pixels makes
    about (h / 14) * (w / 14) tokens; Qwen2 text layers with M-RoPE sections [2, 3, 3]."""
    import transformers

    from dyrate_engine.models.processors import without_video

    name = {"qwen2_vl": "Qwen2VL", "qwen2_5_vl": "Qwen2_5_VL", "qwen3_vl": "Qwen3VL"}[family]
    text = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                rms_norm_eps=1e-5, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": [2, 3, 3]})
    patch = 8 if family == "qwen3_vl" else PATCH
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, in_channels=3,
                  patch_size=patch, spatial_merge_size=2, temporal_patch_size=2)
    if family == "qwen2_vl":
        vision.update(embed_dim=32, mlp_ratio=2, hidden_size=64)
    elif family == "qwen2_5_vl":
        vision.update(out_hidden_size=64, window_size=28, fullatt_block_indexes=[1],
                      tokens_per_second=2)
    else:  # DeepStack after the first two text layers, from vision blocks 0 and 1
        text.update(head_dim=16)
        vision.update(depth=3, out_hidden_size=64, deepstack_visual_indexes=[0, 1],
                      num_position_embeddings=64)
    config = getattr(transformers, f"{name}Config")(
        text_config=text, vision_config=vision, image_token_id=QWEN_SPECIALS["<|image_pad|>"],
        video_token_id=QWEN_SPECIALS["<|video_pad|>"],
        vision_start_token_id=QWEN_SPECIALS["<|vision_start|>"],
        vision_end_token_id=QWEN_SPECIALS["<|vision_end|>"], tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = getattr(transformers, f"{name}ForConditionalGeneration")(config)
    randomise(model)
    model.save_pretrained(directory)
    from dyrate_engine.demo.processor import MEAN, STD, word_level_tokenizer
    from tiny_models import tiny_vocabulary

    vocab = {w: i for w, i in tiny_vocabulary().items() if i < IMAGE_TOKEN - 3}
    vocab.update(QWEN_SPECIALS)
    images = transformers.Qwen2VLImageProcessorPil(
        patch_size=patch, merge_size=2, temporal_patch_size=2, image_mean=list(MEAN),
        image_std=list(STD), min_pixels=(2 * patch) ** 2 * 4, max_pixels=(2 * patch) ** 2 * 64)
    tokenizer = word_level_tokenizer(vocab, image_token="<|image_pad|>",
                                     specials=list(QWEN_SPECIALS))
    processor = without_video(getattr(transformers, f"{name}Processor"), image_processor=images,
                              tokenizer=tokenizer, chat_template=QWEN_TEMPLATE)
    processor.save_pretrained(directory)
    return directory
