"""DyRate's rate predictor: features, the linear classifier, and its exported artifact."""
from .artifact import (check_compatible, check_family, load_predictor, model_fingerprint,
                       save_predictor)
from .features import FeatureSpec, rate_features
from .model import DEFAULT_RATES, RatePredictor

__all__ = ["FeatureSpec", "rate_features", "RatePredictor", "DEFAULT_RATES", "save_predictor",
           "load_predictor", "model_fingerprint", "check_compatible", "check_family"]
