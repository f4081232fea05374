"""The engine (nano-vllm style: the folder is the architecture): the API (``engine``), one
generate call's loop (``generation``, ``prefill``, ``runner``), its state (``sequence``,
``cache``, ``pruning``, ``stats``), sampling and results."""
from .engine import Engine
from .results import GenerationResult, GenerationStats, StreamEvent
from .sampling import SamplingParams

__all__ = ["Engine", "StreamEvent", "GenerationResult", "GenerationStats", "SamplingParams"]
