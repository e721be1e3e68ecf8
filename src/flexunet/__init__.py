"""FlexUNet: config-driven multiclass U-Net segmentation.

The package is a house of subpackages, one per stage of the pipeline over a shared core.
A module imports only from its own subpackage and from those listed after it in
:data:`LAYERS` (tests/test_architecture.py checks every import, lazy ones included):

    cli -> bench -> report -> evaluation -> inference -> training -> planning -> synthetic
        -> model -> preprocessing -> dataset -> config -> utils
"""

__version__ = "0.1.0"

LAYERS = ("cli", "bench", "report", "evaluation", "inference", "training", "planning", "synthetic",
          "model", "preprocessing", "dataset", "config", "utils")
