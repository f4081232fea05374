"""The engine (nano-vllm style: the folder is the architecture): the API (``engine``), one
generate call's loop (``generation``, ``prefill``, ``runner``), its state (``sequence``,
``cache``, ``pruning``, ``stats``), continuous batching (``scheduler``, ``slots``), sampling
and results."""
from .engine import Engine
from .results import GenerationResult, GenerationStats, StreamEvent
from .sampling import SamplingParams
from .handles import QueueFull, Request, RequestHandle
from .scheduler import Scheduler
from .static_step import DecodeOptions

__all__ = ["Engine", "DecodeOptions", "StreamEvent", "GenerationResult", "GenerationStats",
           "SamplingParams", "Scheduler", "Request", "RequestHandle", "QueueFull"]
