"""Network architectures used by the cellzoo bundles."""

from cellzoo.networks.isl import ISLCellNet, ISLNucleusNet, ShiftedSigmoid, isl_network, isl_unet
from cellzoo.networks.mediar import MEDIARFormer

__all__ = ["ISLCellNet", "ISLNucleusNet", "MEDIARFormer", "ShiftedSigmoid", "isl_network", "isl_unet"]
