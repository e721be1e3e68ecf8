"""Training: the fit loop, its callbacks and checkpoints, the collapse guard, the epoch clock, measured settings."""
