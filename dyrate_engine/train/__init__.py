"""Training DyRate's rate predictor end to end through the Gumbel-Softmax (arXiv 2501.14204)."""
from .data import Example, TeacherBatch, collate, encode, load_coco, load_jsonl
from .trainer import TrainConfig, evaluate, teacher_forced_rates, train_predictor

__all__ = ["Example", "TeacherBatch", "collate", "encode", "load_jsonl", "load_coco",
           "TrainConfig", "train_predictor", "evaluate", "teacher_forced_rates"]
