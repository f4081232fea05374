"""Next-token choice: greedy, or sampling with temperature, top-k and top-p (nucleus)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How a request's answer is made and when it ends.

    ``max_new_tokens``: the most tokens it makes. ``temperature == 0`` is greedy (argmax, as
    transformers' ``do_sample=False``); above 0, ``top_k`` and ``top_p`` (nucleus) narrow the
    sampled set and ``seed`` makes the draws repeatable. The answer stops at the checkpoint's
    EOS tokens (unless ``ignore_eos``) and at any of ``stop_token_ids`` (always).
    """

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    max_new_tokens: int = 64
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False

    def __post_init__(self):
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) \
                or self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be a positive int, got {self.max_new_tokens!r}")
        try:
            object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        except (TypeError, ValueError):
            raise ValueError(f"stop_token_ids must be token ids, got {self.stop_token_ids!r}") \
                from None
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def stop_tokens(self, eos_token_ids) -> set[int]:
        """The token ids that end an answer, given the checkpoint's EOS ids."""
        return set(self.stop_token_ids) | (set() if self.ignore_eos else set(eos_token_ids))


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None):
    """Token ids ``[B]`` from fp32 ``logits [B, V]``; no host sync."""
    if params.temperature == 0:
        return logits.argmax(-1)
    logits = logits / params.temperature
    if params.top_k is not None and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p is not None and params.top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the tokens ranked above it already reach top_p (the first stays).
        drop = probs.cumsum(-1) - probs >= params.top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
