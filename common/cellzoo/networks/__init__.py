"""Network architectures used by the cellzoo bundles."""

from cellzoo.networks.isl import ISLCellNet, ShiftedSigmoid, isl_unet
from cellzoo.networks.mediar import MEDIARFormer

__all__ = ["ISLCellNet", "MEDIARFormer", "ShiftedSigmoid", "isl_unet"]
