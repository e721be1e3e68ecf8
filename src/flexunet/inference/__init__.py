"""Prediction on new images: masks, overlays, volumes, uncertainty; export of the trained model."""
