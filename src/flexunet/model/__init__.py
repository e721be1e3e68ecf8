"""The network, its losses and metrics, and a trained model run as it was trained (the run folder, prediction)."""
