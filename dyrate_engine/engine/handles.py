"""A scheduler's requests: :class:`Request` (what to run), :class:`RequestHandle` (its state,
tokens and cancellation), and :class:`QueueFull`, the refusal of a request beyond the queue's
bound."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..models.vision import VisionInputs
from ..policies.base import Policy
from .results import GenerationResult
from .sampling import SamplingParams
from .sequence import Sequence


class QueueFull(RuntimeError):
    """The scheduler's waiting queue is at its bound: the request is refused, not queued."""


@dataclass
class Request:
    """One request: token ids with the model's image tokens, its images' processor outputs
    (``{"pixel_values": ...}`` and the family's other keys), a policy (its own object: a
    policy may keep state per request) and sampling parameters."""

    input_ids: torch.Tensor
    vision: dict | VisionInputs
    policy: Policy | None = None
    params: SamplingParams = dataclasses.field(default_factory=SamplingParams)
    request_id: str = ""


class RequestHandle:
    """A submitted request: its state, its tokens so far, and :meth:`cancel`."""

    def __init__(self, request: Request, sequence: Sequence):
        self.request, self.sequence = request, sequence
        self.status = "waiting"  # -> "running" -> "finished" | "cancelled" | "failed"
        self.cancelled = False
        self.error: Exception | None = None
        self._tokenizer = None

    @property
    def done(self) -> bool:
        return self.status in ("finished", "cancelled", "failed")

    def cancel(self) -> None:
        """Stop the request: it leaves its slot (or the queue) at the next step."""
        self.cancelled = True

    def result(self) -> GenerationResult:
        return self.sequence.result(self._tokenizer)
