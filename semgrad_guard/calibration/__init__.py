"""Calibration: the anchor search (SPS) and model profiles."""

from ..scoring.profile import ModelProfile, ProfileStore, model_fingerprint
from .anchor_search import SPSTable, search_anchor

__all__ = ["ModelProfile", "ProfileStore", "SPSTable", "model_fingerprint", "search_anchor"]
