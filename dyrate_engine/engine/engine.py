"""The engine: loads an HF LLaVA checkpoint, runs the vision tower once per request and the text
decoder itself, with a preallocated cache and a thin decode loop (DESIGN.md, data flow)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import torch

from ..models.llama import SUPPORTED_TEXT_MODELS, LlamaDecoder
from ..policies.base import Dense, Policy
from . import flops
from .cache import KVCache
from .pruning import PruningState, validate_policy
from .inputs import to_model_inputs
from .requests import PreparedBatch, validate_request
from .results import GenerationResult, GenerationStats
from .runner import decode_layers, prefill_layers
from .sampling import SamplingParams, sample


@dataclass
class StreamEvent:
    index: int  # request
    token_id: int
    text: str  # newly decoded text ("" without a tokenizer)


class Engine:
    """Runs a LLaVA-style VLM with dynamic visual-token pruning. Build with :meth:`from_pretrained`."""

    def __init__(self, hf_model, processor=None, *, max_seq_len: int | None = None):
        self.hf = hf_model
        self.processor = processor
        self.config = hf_model.config
        self.decoder = LlamaDecoder(self.config.text_config, hf_model.model.language_model,
                                    hf_model.lm_head.weight)
        vision = self.config.vision_config
        self.image_size = vision.image_size
        extra = 1 if self.config.vision_feature_select_strategy == "full" else 0
        self.tokens_per_image = (vision.image_size // vision.patch_size) ** 2 + extra
        self.image_token_id = self.config.image_token_id
        self.max_seq_len = max_seq_len or self.config.text_config.max_position_embeddings
        gen = getattr(hf_model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None) or self.config.text_config.eos_token_id
        self.eos_token_ids = [eos] if isinstance(eos, int) else list(eos or [])

    @classmethod
    def from_pretrained(cls, path, device="cpu", dtype=None, *, max_seq_len=None) -> "Engine":
        """Load a local ``LlavaForConditionalGeneration`` checkpoint directory (config and
        safetensors; processor files optional), e.g. llava-hf/llava-1.5-7b-hf or a model saved
        with ``save_pretrained``, or ``"demo"`` for the bundled demo model. ``dtype`` defaults to
        fp32; ``max_seq_len`` (prompt plus new tokens) to the text model's
        ``max_position_embeddings``."""
        from transformers import AutoConfig, AutoProcessor, LlavaForConditionalGeneration

        from ..demo import DEMO_MODEL, resolve

        path = resolve(path, DEMO_MODEL, "config.json")
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is not a checkpoint directory (no config.json)")
        config = AutoConfig.from_pretrained(path)
        text_type = getattr(getattr(config, "text_config", None), "model_type", None)
        if config.model_type != "llava" or text_type not in SUPPORTED_TEXT_MODELS:
            raise ValueError(
                f"{path} holds a {config.model_type!r} model (text: {text_type!r}); supported: "
                f"'llava' (LlavaForConditionalGeneration) with a {', '.join(SUPPORTED_TEXT_MODELS)}"
                f" text model")
        # safetensors only: never unpickle weight files.
        hf = LlavaForConditionalGeneration.from_pretrained(
            path, dtype=dtype or torch.float32, use_safetensors=True).to(device).eval()
        has_processor = any((path / f).is_file() for f in (
            "processor_config.json", "preprocessor_config.json", "tokenizer.json"))
        processor = AutoProcessor.from_pretrained(path) if has_processor else None
        return cls(hf, processor, max_seq_len=max_seq_len)

    @property
    def device(self) -> torch.device:
        return self.decoder.device

    # ----------------------------------------------------------------------------- public API
    def generate(self, images, prompts, policy: Policy | None = None, max_new_tokens: int = 64,
                 **sampling) -> list[GenerationResult]:
        """Answer ``prompts`` (str or list) about ``images`` (PIL images, HWC uint8 arrays or CHW
        tensors; one per prompt) with the checkpoint's processor and chat template.
        ``sampling``: ``temperature`` (0 = greedy), ``top_k``, ``top_p``, ``seed``, and
        ``stop_token_ids``."""
        ids, pixels = to_model_inputs(self, images, prompts)
        return self.generate_ids(ids, pixels, policy, max_new_tokens, **sampling)

    def generate_ids(self, input_ids, pixel_values, policy: Policy | None = None,
                     max_new_tokens: int = 64, *, stop_token_ids=(), output_logits=False,
                     **sampling) -> list[GenerationResult]:
        """Like :meth:`generate` on token ids: ``input_ids`` a list of 1-D tensors (ragged, each
        with the checkpoint's image tokens where its image goes), ``pixel_values [B, 3, H, W]``.
        ``output_logits`` keeps each result's fp32 logits ``[new tokens, V]`` (on the CPU)."""
        results = None
        for results, _ in self._run(input_ids, pixel_values, policy, max_new_tokens,
                                    stop_token_ids, SamplingParams(**sampling), output_logits):
            pass
        return results

    def stream(self, images, prompts, policy: Policy | None = None, max_new_tokens: int = 64,
               *, stop_token_ids=(), **sampling) -> Iterator[StreamEvent]:
        """Yield a :class:`StreamEvent` per new token of each request as it is produced."""
        ids, pixels = to_model_inputs(self, images, prompts)
        tokenizer = getattr(self.processor, "tokenizer", None)
        shown = [""] * len(ids)
        for results, new in self._run(ids, pixels, policy, max_new_tokens, stop_token_ids,
                                      SamplingParams(**sampling)):
            for b, token in new:
                text = tokenizer.decode(results[b].token_ids, skip_special_tokens=True) \
                    if tokenizer else ""
                yield StreamEvent(b, token, text[len(shown[b]):])
                shown[b] = text

    # ------------------------------------------------------------------------------ the loop
    @torch.inference_mode()
    def _run(self, input_ids, pixel_values, policy, max_new_tokens, stop_token_ids, params,
             output_logits=False):
        """Yields ``(results, [(request, token), ...])`` after the prefill and each decode step."""
        policy = policy or Dense()
        dec, device = self.decoder, self.device
        K = validate_policy(policy, dec.n_layers)
        policy.check_model(dec.config)
        batch = validate_request(
            input_ids, pixel_values, image_token_id=self.image_token_id,
            tokens_per_image=self.tokens_per_image, image_size=self.image_size,
            max_new_tokens=max_new_tokens, capacity_limit=self.max_seq_len)
        B, prompt_lens = len(batch.input_ids), batch.prompt_lens
        cache = KVCache.allocate(dec.n_layers, B, dec.n_kv_heads, max(prompt_lens) + max_new_tokens,
                                 dec.head_dim, dtype=dec.dtype, device=device, prune_from=K)
        windowed = [i for i in range(K, dec.n_layers) if dec.layers[i].sliding_window is not None
                    and dec.layers[i].sliding_window < cache.capacity]
        if windowed:  # compacted slots are no longer positions: the window would shift
            raise NotImplementedError(f"pruning layers with a sliding window shorter than the "
                                      f"sequence (layers {windowed}) is not supported")
        policy.reset(B)
        pruning = PruningState(policy, batch.vis_start, batch.n_visual, prompt_lens, device) \
            if K < dec.n_layers else None
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=device).manual_seed(params.seed)
        stop = set(self.eos_token_ids) | set(stop_token_ids)
        stats = [GenerationStats(prompt_tokens=n, n_visual=nv)
                 for n, nv in zip(prompt_lens, batch.n_visual)]
        results = [GenerationResult([], None, s) for s in stats]
        kept_logits = [[] for _ in range(B)] if output_logits else None

        start = time.perf_counter()
        logits, pruned_lens = self._prefill(batch, cache, pruning)
        token = sample(logits, params, generator)
        host_tokens = token.tolist()  # inside the timer: on CUDA this waits for the device's work
        elapsed = (time.perf_counter() - start) * 1e3
        lens = [list(prompt_lens), pruned_lens]  # host mirror of cache.lengths
        for b, s in enumerate(stats):
            s.prefill_ms = elapsed
            per_layer = [prompt_lens[b]] * K + [pruned_lens[b]] * (dec.n_layers - K)
            self._step_stats(s, b, pruning, flops.prefill_flops(dec, per_layer),
                             flops.prefill_flops(dec, [prompt_lens[b]] * dec.n_layers),
                             (prompt_lens[b], pruned_lens[b]))
        finished = [False] * B
        for step in range(max_new_tokens):
            if kept_logits is not None:
                for b in range(B):
                    if not finished[b]:
                        kept_logits[b].append(logits[b].cpu())
            new = self._record(host_tokens, stop, results, finished)
            if all(finished) or step == max_new_tokens - 1:
                if kept_logits is not None:
                    for r, rows in zip(results, kept_logits):
                        r.logits = torch.stack(rows)
                yield self._decoded(results), new
                return
            yield results, new
            start = time.perf_counter()
            logits = self._decode_step(token, cache, pruning, lens, step + 1, K)
            token = sample(logits, params, generator)
            host_tokens = token.tolist()
            elapsed = (time.perf_counter() - start) * 1e3
            for b, s in enumerate(stats):
                if not finished[b]:
                    s.step_ms.append(elapsed)
                    keys = [lens[0][b]] * K + [lens[1][b]] * (dec.n_layers - K)
                    self._step_stats(s, b, pruning, flops.decode_flops(dec, keys),
                                     flops.decode_flops(dec, [lens[0][b]] * dec.n_layers),
                                     (lens[0][b], lens[1][b]))

    def _decode_step(self, token, cache, pruning, lens, step, K):
        """One token for every sequence: layers < K, the monitor and pruning, layers >= K.
        ``lens`` (host mirror of the two groups' lengths) is updated in place."""
        dec = self.decoder
        h = dec.embed_tokens[token][:, None]
        h, q = decode_layers(dec, cache, h, range(K), (max(lens[0]), max(lens[1])))
        if pruning is not None and pruning.policy.monitors_decode:
            n_keep = pruning.monitor(step, q[:, :, 0], cache.kv[K - 1, 0], cache.lengths[0] + 1)
            selection = pruning.select(n_keep)
            if selection is not None:
                dropped = pruning.compact(cache, *selection)
                lens[1] = [n - d for n, d in zip(lens[1], dropped)]
        h, _ = decode_layers(dec, cache, h, range(K, dec.n_layers), (max(lens[0]), max(lens[1])))
        cache.lengths += 1
        cache.positions += 1
        lens[0] = [n + 1 for n in lens[0]]
        lens[1] = [n + 1 for n in lens[1]]
        return dec.logits(h[:, 0])

    def _step_stats(self, s: GenerationStats, b, pruning, step_flops, dense_flops, lengths):
        s.cache_lengths.append(lengths)
        s.kept_visual.append(pruning.n_kept[b] if pruning else s.n_visual)
        s.rates.append(pruning.last_rates[b] if pruning else 0.0)
        s.type_mass.append(pruning.last_type_mass[b] if pruning else [])
        s.flops.append(step_flops)
        s.dense_flops.append(dense_flops)

    def _prefill(self, batch: PreparedBatch, cache: KVCache, pruning: PruningState | None):
        """Vision tower once for the batch, then each prompt's own causal prefill (exactly what
        it computes alone). With a pruning policy, layers < K run first for every prompt, the
        policy sees the last prompt token's attention at layer K-1, and layers >= K run on the
        kept tokens only (original positions kept), writing their cache compact.
        Returns the last prompt token's logits ``[B, V]`` and the pruned layers' lengths."""
        dec, device = self.decoder, self.device
        K = cache.prune_from
        features = self.image_features(batch.pixel_values)
        hidden, positions, queries = [], [], []
        for b, ids in enumerate(batch.input_ids):
            ids = ids.to(device)
            h = dec.embed_tokens[ids].clone()
            start, n = batch.vis_start[b], batch.n_visual[b]
            h[start:start + n] = features[b].to(h.dtype)
            pos = torch.arange(len(ids), device=device)[None]
            h, q = prefill_layers(dec, cache, b, h[None], pos, range(K))
            hidden.append(h)
            positions.append(pos)
            queries.append(q[0, :, -1])
            cache.lengths[:, b] = len(ids)
            cache.positions[b] = len(ids)
        pruned_lens = list(batch.prompt_lens)
        if pruning is not None:
            n_keep = pruning.monitor(0, torch.stack(queries), cache.kv[K - 1, 0], cache.lengths[0])
            selection = pruning.select(n_keep)
            if selection is not None:
                keep, counts = selection
                for b in range(len(hidden)):
                    start, n = batch.vis_start[b], batch.n_visual[b]
                    token_kept = torch.ones(hidden[b].shape[1], dtype=torch.bool, device=device)
                    token_kept[start:start + n] = keep[b, :n]
                    hidden[b], positions[b] = hidden[b][:, token_kept], positions[b][:, token_kept]
                    pruned_lens[b] -= n - counts[b]
                pruning.prefill_keep(keep, counts)
                cache.lengths[1] = torch.tensor(pruned_lens, device=device)
        logits = []
        for b in range(len(hidden)):
            h, _ = prefill_layers(dec, cache, b, hidden[b], positions[b], range(K, dec.n_layers))
            logits.append(dec.logits(h[:, -1]))
        return torch.cat(logits), pruned_lens

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected visual tokens ``[B, tokens_per_image, d]`` from the HF vision tower."""
        out = self.hf.model.get_image_features(
            pixel_values=pixel_values.to(self.device, self.hf.dtype))
        features = getattr(out, "pooler_output", out)
        return torch.stack(list(features)) if isinstance(features, (list, tuple)) else features

    def _record(self, tokens, stop, results, finished):
        new = []
        for b, t in enumerate(tokens):
            if finished[b]:
                continue
            results[b].token_ids.append(t)
            new.append((b, t))
            if t in stop:
                finished[b] = True
                results[b].finish_reason = "stop"
        return new

    def _decoded(self, results):
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None:
            for r in results:
                r.text = tokenizer.decode(r.token_ids, skip_special_tokens=True)
        return results
