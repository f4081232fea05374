"""dyrate_engine: dynamic visual-token reduction during generation for vision-language models.

DyRate (arXiv 2501.14204): a small predictor reads the attention distribution over token types at
every decode step and picks a pruning rate; fused ops score, select and compact the KV cache.
"""
from . import ops
from .engine import Engine, GenerationResult, GenerationStats, SamplingParams, StreamEvent
from .policies import Dense, DyRate, FastV, MonitorStats, Policy, RandomKeep, Schedule

__version__ = "0.1.0"
__all__ = ["ops", "Engine", "GenerationResult", "GenerationStats", "SamplingParams",
           "StreamEvent", "Policy", "MonitorStats", "Dense", "FastV", "Schedule", "RandomKeep",
           "DyRate", "__version__"]
