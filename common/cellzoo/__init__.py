"""cellzoo: shared toolkit behind the cellzoo MONAI bundles for label-efficient cell microscopy."""

__version__ = "0.1.0"
