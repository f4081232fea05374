"""Data that training and evaluation share: ``{image, prompt, answer}`` records from JSONL files
or COCO-style caption annotations, and the synthetic shape scenes of the demo."""
from .records import DEFAULT_PROMPT, load_coco, load_jsonl

__all__ = ["DEFAULT_PROMPT", "load_jsonl", "load_coco"]
