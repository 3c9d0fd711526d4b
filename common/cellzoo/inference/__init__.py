"""Whole-image inference: sliding windows (MONAI), flip TTA, ensembles and halo tiling for images of any size."""

from cellzoo.inference.predictor import Tile, WholeImageInferer, WholeImagePredictor, halo_tiles, stride_padding
from cellzoo.inference.tta import FlipInverse, FlipTTA, flow_flip_inverse

__all__ = ["FlipInverse", "FlipTTA", "Tile", "WholeImageInferer", "WholeImagePredictor", "flow_flip_inverse",
           "halo_tiles", "stride_padding"]
