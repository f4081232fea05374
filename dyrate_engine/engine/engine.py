"""The engine: runs a vision-language model through its adapter (the vision tower once per request,
the text decoder itself) with a preallocated cache and a thin decode loop, pruning visual tokens as
the policy asks (docs/DESIGN.md, data flow)."""
from __future__ import annotations

import dataclasses
from typing import Iterator

import torch

from ..bundled import resolve_model
from ..models import FAMILIES, VisionLanguageModel, load_model
from ..models.llama import linear
from ..models.sharding import shard_model
from ..models.tensor_parallel import DEFAULT_TIMEOUT_S, init_tensor_parallel
from ..models.vision import VisionInputs
from ..ops.prefill_linear import ONEDNN_PACKING, fits_in_memory
from ..policies.base import Dense, Policy
from .generation import Generation
from .requests import make_sequences
from .results import GenerationResult, StreamEvent
from .scheduler import Scheduler
from .sampling import SamplingParams
from .static_step import DecodeOptions


class Engine:
    """Runs a VLM with dynamic visual-token pruning. Build with :meth:`from_pretrained`, or from
    a loaded adapter (``Engine(LlavaModel(hf_model, processor))``).

    ``decode_step``, ``attention``, ``compile``, ``cuda_graphs`` and ``prepack`` choose how the
    decode step runs (:class:`DecodeOptions`): by default the static, CUDA-graphed step on CUDA
    and the dynamic one on the CPU, with fp32 weights packed for MKL at the batch's row count
    where that measured faster on this machine (``prepack=(8, 16)``: for those batch sizes,
    when the engine is built);
    ``compile=True`` runs the static step through ``torch.compile``. Both steps give the same
    tokens.

    ``prefill_prepack``: on the CPU, multiply a prompt's rows by fp32 weights reordered once for
    oneDNN (``ops.prefill_linear``), at the cost of a copy of the layers' weights; ``"auto"``
    (the default) packs when the model is fp32 on the CPU and the copy takes at most a quarter
    of the memory available, ``True`` always (or raises), ``False`` never (and drops the copies
    another engine over the same model made)."""

    def __init__(self, model: VisionLanguageModel, *, decode_step: str = "auto",
                 attention: str = "auto", compile: bool = False, cuda_graphs: bool = True,
                 prepack: bool | str | tuple[int, ...] = "auto",
                 prefill_prepack: bool | str = "auto"):
        if not isinstance(model, VisionLanguageModel):
            raise TypeError(f"Engine() takes a model adapter (dyrate_engine.models), got "
                            f"{type(model).__name__}; wrap a transformers LLaVA model with "
                            f"dyrate_engine.models.LlavaModel(hf_model) or use "
                            f"Engine.from_pretrained(path)")
        self.model = model
        self.options = DecodeOptions(decode_step, attention, compile, cuda_graphs, prepack)
        if isinstance(self.options.prepack, tuple):
            self._pack_at_load(self.options.prepack)
        self._pack_prefill_at_load(prefill_prepack)
        self.prefill_prepack = prefill_prepack

    def with_model(self, model: VisionLanguageModel) -> "Engine":
        """An engine over ``model``, another view of this engine's weights (e.g.
        ``models.PooledGrid``), with this engine's decode options and its packed weights."""
        if model.decoder is not self.model.decoder:
            raise ValueError("with_model takes a view of this engine's model (the same decoder)")
        other = object.__new__(Engine)
        other.model, other.options = model, self.options
        other.prefill_prepack = self.prefill_prepack
        return other

    def _pack_at_load(self, batch_sizes: tuple[int, ...]) -> None:
        dec = self.model.decoder
        if dec.device.type != "cpu" or dec.dtype != torch.float32:
            raise ValueError(f"prepack={batch_sizes} packs fp32 weights on the CPU; this model "
                             f"is {dec.dtype} on {dec.device}")
        for rows in batch_sizes:
            dec.packed.pack_where_faster(dec.linear_weights(), rows, linear, keep_others=True)

    def _pack_prefill_at_load(self, mode: bool | str) -> None:
        if mode not in (True, False, "auto"):
            raise ValueError(f"prefill_prepack must be True, False or 'auto', got {mode!r}")
        dec = self.model.decoder
        eligible = dec.device.type == "cpu" and dec.dtype == torch.float32 and ONEDNN_PACKING
        if mode is True and not eligible:
            raise ValueError(f"prefill_prepack=True packs fp32 weights on the CPU with oneDNN; "
                             f"this model is {dec.dtype} on {dec.device} (oneDNN in this torch "
                             f"build: {ONEDNN_PACKING})")
        weights = dec.prefill_weights()
        if mode is True or (mode == "auto" and eligible and fits_in_memory(
                sum(w.numel() * w.element_size() for w in weights))):
            dec.prefill_packed.pack(weights)
        else:  # the copies live on the shared decoder: drop another engine's
            dec.prefill_packed.release()

    @classmethod
    def from_pretrained(cls, path, device="cpu", dtype=None, *, max_seq_len=None, tp: int = 1,
                        tp_timeout_s: float = DEFAULT_TIMEOUT_S, **options) -> "Engine":
        """Load a local checkpoint directory (config and safetensors; processor files optional;
        the family from its config.json), or ``"demo"`` for the bundled demo model. ``dtype``
        defaults to fp32; ``max_seq_len`` (prompt plus new tokens) to the text model's
        ``max_position_embeddings``; ``options``: the decode-step keywords of :class:`Engine`.

        ``tp=N`` splits the text decoder over the N processes of a torch.distributed group (under
        ``torchrun --nproc-per-node N``; NCCL on CUDA, each rank its ``LOCAL_RANK`` GPU, gloo on
        the CPU); every rank calls ``generate`` with the same inputs and gets the same results.
        A collective that waits ``tp_timeout_s`` for a failed or stuck rank raises
        :class:`~dyrate_engine.models.tensor_parallel.TensorParallelError` on every live rank.
        CUDA graphs are off by default under ``tp > 1``."""
        if tp < 1:
            raise ValueError(f"tp must be >= 1, got {tp}")
        if tp == 1:
            return cls(load_model(path, device, dtype, max_seq_len=max_seq_len), **options)
        if options.get("compile"):
            raise ValueError("compile=True is not supported with tp > 1 (the collectives run "
                             "eagerly)")
        options.setdefault("cuda_graphs", False)  # capturing the collectives is not tested
        parallel = init_tensor_parallel(tp, device, tp_timeout_s)
        model = load_model(path, parallel.device, dtype, max_seq_len=max_seq_len,
                           text_layers=False)
        shard_model(model, resolve_model(path), parallel)
        return cls(model, **options)

    @property
    def decoder(self):
        return self.model.decoder

    @property
    def device(self) -> torch.device:
        return self.model.device

    def check_policy(self, policy: Policy) -> int:
        """Raise a clear ValueError if ``policy`` cannot run on this model (its layer out of range,
        a predictor trained for another model); returns its first pruned layer K (the number
        of layers when it never prunes)."""
        n_layers = self.decoder.n_layers
        K = policy.prune_layer
        if K is None:
            return n_layers
        if not 1 <= K <= n_layers - 1:
            raise ValueError(f"{policy.name}: the monitor layer K-1 = {K - 1} must be in "
                             f"[0, {n_layers - 2}] so that at least one layer is pruned (the "
                             f"model has {n_layers} layers)")
        policy.check_model(self.decoder.config)
        policy.check_family(self.model.family)
        return K

    def scheduler(self, **options) -> Scheduler:
        """Continuous batching over this engine's model: requests join and leave a running
        batch between decode steps. ``options``: ``max_batch``, ``capacity``, ``prune_layer``,
        ``max_queue``, ``batching`` (:class:`~dyrate_engine.engine.scheduler.Scheduler`)."""
        if self.decoder.parallel is not None:  # requests arrive at one rank, in its own order
            raise NotImplementedError("continuous batching is not supported with tp > 1; "
                                      "use generate() on every rank")
        return Scheduler(self, **options)

    # ------------------------------------------------------------------------------ public API
    def generate(self, images, prompts, policy: Policy | None = None,
                 sampling_params: SamplingParams | None = None, *, videos=None, **overrides
                 ) -> list[GenerationResult]:
        """Answer ``prompts`` (str or list) about ``images`` (for each prompt one image or a list
        of them, shown in order before its text: PIL images, HWC uint8 arrays or CHW tensors)
        with the checkpoint's processor and chat template. ``videos`` (the Qwen-VL families):
        for each prompt None, one video (a ``models.video.Video``, or its frames) or a list of
        ``Video``, shown after its images; ``images`` may be None then.
        ``sampling_params`` (default: greedy, 64 new tokens); keyword ``overrides`` replace its
        fields, e.g. ``max_new_tokens=32, temperature=0.7, seed=0, stop_token_ids=[2]``."""
        ids, vision = self.model.encode(images, prompts, videos)
        return self._results(self._generation(ids, vision, policy, sampling_params, overrides,
                                              False))

    def generate_ids(self, input_ids, pixel_values=None, policy: Policy | None = None,
                     sampling_params: SamplingParams | None = None, *,
                     output_logits: bool = False, **kwargs) -> list[GenerationResult]:
        """Like :meth:`generate` on what the processor made: ``input_ids`` a list of 1-D tensors
        (ragged, each with the checkpoint's image tokens where its images go), ``pixel_values``
        of every prompt's images in order, and the family's other vision tensors by their
        processor names (``model.vision_keys``, e.g. ``image_sizes``); the other keywords
        override ``sampling_params``' fields. ``output_logits`` keeps each result's fp32 logits
        ``[new tokens, V]`` (on the CPU)."""
        vision = {name: kwargs.pop(name) for name in self.model.vision_keys if name in kwargs}
        foreign = sorted(set(kwargs) & {key for family in FAMILIES.values()
                                        for key in family.vision_keys})
        if foreign:
            raise ValueError(f"{', '.join(foreign)}: not an input of a {self.model.family!r} "
                             f"model (its vision inputs: {', '.join(self.model.vision_keys)})")
        vision = VisionInputs({"pixel_values": pixel_values, **vision})
        return self._results(self._generation(input_ids, vision, policy, sampling_params, kwargs,
                                              output_logits))

    def _results(self, run: Generation) -> list[GenerationResult]:
        for _ in run.run():
            pass
        return [seq.result(self.model.tokenizer) for seq in run.sequences]

    def stream(self, images, prompts, policy: Policy | None = None,
               sampling_params: SamplingParams | None = None, *, videos=None, **overrides
               ) -> Iterator[StreamEvent]:
        """Yield a :class:`StreamEvent` per new token of each request as it is produced."""
        ids, vision = self.model.encode(images, prompts, videos)
        run = self._generation(ids, vision, policy, sampling_params, overrides, False)
        tokenizer = self.model.tokenizer
        shown = [""] * len(run.sequences)
        for new in run.run():
            for b, token in new:
                text = tokenizer.decode(run.sequences[b].token_ids, skip_special_tokens=True) \
                    if tokenizer else ""
                yield StreamEvent(b, token, text[len(shown[b]):])
                shown[b] = text

    def _generation(self, input_ids, vision: VisionInputs, policy, sampling_params, overrides,
                    output_logits) -> Generation:
        """Everything checked before the decoder runs: the policy, the sampling, the requests
        against their images."""
        policy = policy or Dense()
        K = self.check_policy(policy)
        params = sampling_params_with(sampling_params, overrides)
        sequences = make_sequences(self.model, input_ids, vision, params,
                                   output_logits=output_logits)
        return Generation(self.model, sequences, vision, policy, params, K, self.options)


def sampling_params_with(params: SamplingParams | None, overrides: dict) -> SamplingParams:
    """``params`` (default ``SamplingParams()``) with the fields in ``overrides`` replaced."""
    if params is None:
        return SamplingParams(**overrides)
    if not isinstance(params, SamplingParams):
        raise TypeError(f"sampling_params must be a SamplingParams, got {params!r}; pass "
                        f"max_new_tokens=N as a keyword")
    return dataclasses.replace(params, **overrides) if overrides else params
