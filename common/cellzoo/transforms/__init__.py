"""MONAI dictionary transforms shared by several bundles: reading images and planes through cellzoo's reader."""

from cellzoo.transforms.loading import CellImageReader, LoadPlanesd, as_cyx, to_three_channels

__all__ = ["CellImageReader", "LoadPlanesd", "as_cyx", "to_three_channels"]
