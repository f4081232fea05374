"""Training DyRate's rate predictor end to end through the Gumbel-Softmax (arXiv 2501.14204)."""
from .examples import Example, TeacherBatch, collate, encode
from .trainer import TrainConfig, evaluate, teacher_forced_rates, train_predictor

__all__ = ["Example", "TeacherBatch", "collate", "encode", "TrainConfig", "train_predictor",
           "evaluate", "teacher_forced_rates"]
