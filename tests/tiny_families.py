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
