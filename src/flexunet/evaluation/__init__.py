"""Honest figures on the test set: per-class counts and scores, volumes and calibration."""
