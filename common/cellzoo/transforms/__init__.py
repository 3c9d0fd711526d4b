"""MONAI dictionary transforms shared by several bundles: reading images and planes through cellzoo's reader."""

from cellzoo.transforms.loading import LoadImagesd, as_cyx, read_channels, to_three_channels

__all__ = ["LoadImagesd", "as_cyx", "read_channels", "to_three_channels"]
