"""Scoring: SemGrad, HybridGrad and the sampling-free baselines, and the model profiles
that say where SemGrad takes its gradients."""

from .profile import ModelProfile, ProfileStore, model_fingerprint
from .result import SCORE_NAMES, UncertaintyScore
from .semgrad import Anchor, SemGradScorer

__all__ = ["SCORE_NAMES", "Anchor", "ModelProfile", "ProfileStore", "SemGradScorer",
           "UncertaintyScore", "model_fingerprint"]
