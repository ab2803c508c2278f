"""Scoring: SemGrad, HybridGrad and the sampling-free baselines, and the model profiles
that say where SemGrad takes its gradients."""

from .profile import ModelProfile, ProfileStore, model_fingerprint
from .result import SCORE_NAMES, HiddenStates, UncertaintyScore
from .scorer import Scorer
from .semgrad import Anchor, SemGradScorer, hybridgrad

__all__ = ["SCORE_NAMES", "Anchor", "HiddenStates", "ModelProfile", "ProfileStore", "Scorer",
           "SemGradScorer", "UncertaintyScore", "model_fingerprint", "hybridgrad"]
