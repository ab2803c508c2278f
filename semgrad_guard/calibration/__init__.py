"""Calibration: the anchor search (SPS) and model profiles."""

from .anchor_search import SPSTable, search_anchor
from .profile import ModelProfile, ProfileStore, model_fingerprint

__all__ = ["ModelProfile", "ProfileStore", "SPSTable", "model_fingerprint", "search_anchor"]
