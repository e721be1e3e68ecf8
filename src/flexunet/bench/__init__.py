"""The speed benchmark: timed runs of the pipeline's stages on this machine."""
