"""One request of a generate call: its prompt, where its visual tokens are, and what it has made."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..models.layout import VisualLayout
from .results import GenerationResult, GenerationStats


@dataclass
class Sequence:
    index: int  # place in the batch: the row of the cache and of every per-sequence tensor
    prompt_ids: torch.Tensor  # 1-D int64, on the CPU
    layout: VisualLayout  # where its visual tokens are
    stats: GenerationStats
    token_ids: list[int] = field(default_factory=list)
    finished: bool = False
    finish_reason: str = "length"  # "stop" (EOS or a stop token) or "length"
    logits: list[torch.Tensor] | None = None  # fp32 [V] per new token, when asked for

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)

    def append(self, token: int, stop: set[int]) -> None:
        """Record a new token; a stop token finishes the sequence (and is kept)."""
        self.token_ids.append(token)
        if token in stop:
            self.finished = True
            self.finish_reason = "stop"

    def result(self, tokenizer=None) -> GenerationResult:
        text = tokenizer.decode(self.token_ids, skip_special_tokens=True) if tokenizer else None
        logits = torch.stack(self.logits) if self.logits is not None else None
        return GenerationResult(list(self.token_ids), text, self.stats, self.finish_reason, logits)
