"""Scoring: SemGrad, HybridGrad and the sampling-free baselines."""

from .result import SCORE_NAMES, UncertaintyScore
from .semgrad import Anchor, SemGradScorer

__all__ = ["SCORE_NAMES", "Anchor", "SemGradScorer", "UncertaintyScore"]
