"""FlexUNet: config-driven multiclass U-Net segmentation."""

__version__ = "0.1.0"
