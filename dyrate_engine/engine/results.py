"""What a generate call returns per request."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GenerationStats:
    """Per-request statistics. Times are wall-clock for the whole batch step the request took
    part in; FLOPs are this request's own (``flops`` as run, ``dense_flops`` for the same tokens
    without pruning), per step, step 0 being the prefill."""

    prompt_tokens: int = 0
    n_visual: int = 0
    prefill_ms: float = 0.0
    step_ms: list[float] = field(default_factory=list)
    kept_visual: list[int] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)  # the policy's requested rate per step
    cache_lengths: list[tuple[int, int]] = field(default_factory=list)  # (layers < K, layers >= K)
    flops: list[int] = field(default_factory=list)
    dense_flops: list[int] = field(default_factory=list)
    type_mass: list[list[float]] = field(default_factory=list)  # monitor layer, head mean, per step

    @property
    def new_tokens(self) -> int:
        return len(self.step_ms) + 1 if self.prefill_ms else 0

    @property
    def decode_tokens_per_s(self) -> float:
        total = sum(self.step_ms)
        return len(self.step_ms) / (total / 1e3) if total > 0 else 0.0

    @property
    def flops_saved(self) -> float:
        dense = sum(self.dense_flops)
        return 1 - sum(self.flops) / dense if dense else 0.0

    def summary(self) -> str:
        kept = f"{self.kept_visual[-1]}/{self.n_visual}" if self.kept_visual else "-"
        return (f"{self.new_tokens} tokens, prefill {self.prefill_ms:.1f} ms, decode "
                f"{self.decode_tokens_per_s:.1f} tok/s, kept visual tokens {kept}, "
                f"FLOPs {1 - self.flops_saved:.1%} of dense")


@dataclass
class GenerationResult:
    token_ids: list[int]
    text: str | None
    stats: GenerationStats
    finish_reason: str = "length"  # "stop" (EOS or a stop token) or "length"
    logits: object = None  # fp32 [len(token_ids), V] when asked for (output_logits=True)


@dataclass
class StreamEvent:
    """One new token of request ``index``, as :meth:`Engine.stream` yields it."""

    index: int
    token_id: int
    text: str  # newly decoded text ("" without a tokenizer)
