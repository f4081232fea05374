from .engine import Engine, StreamEvent
from .results import GenerationResult, GenerationStats
from .sampling import SamplingParams

__all__ = ["Engine", "StreamEvent", "GenerationResult", "GenerationStats", "SamplingParams"]
