"""The quality harness (``dyrate eval``): caption quality vs compute of pruning policies on the
synthetic demo split, a JSONL file or COCO-style captions."""
from .data import EvalItem, load_eval_set
from .harness import EvalPolicy, PolicyResult, attention_shares, eval_policy, run_policy
from .metrics import caption_scores, tokenize

__all__ = ["EvalItem", "load_eval_set", "EvalPolicy", "PolicyResult", "eval_policy", "run_policy",
           "attention_shares", "caption_scores", "tokenize"]
