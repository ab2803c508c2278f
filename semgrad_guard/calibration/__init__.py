"""Calibration: the anchor search (SPS) and model profiles."""

from .profile import ModelProfile, ProfileStore, model_fingerprint

__all__ = ["ModelProfile", "ProfileStore", "model_fingerprint"]
