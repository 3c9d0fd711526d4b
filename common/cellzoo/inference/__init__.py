"""Whole-image inference: sliding windows (MONAI), flip TTA, ensembles and halo tiling for images of any size,
with PyTorch or ONNX (onnxruntime) networks."""

from cellzoo.inference.onnx import OnnxNetwork, is_onnx, load_networks
from cellzoo.inference.predictor import Tile, WholeImageInferer, WholeImagePredictor, halo_tiles, stride_padding
from cellzoo.inference.tta import FlipInverse, FlipTTA, flow_flip_inverse

__all__ = ["FlipInverse", "FlipTTA", "OnnxNetwork", "Tile", "WholeImageInferer", "WholeImagePredictor", "flow_flip_inverse",
           "halo_tiles", "is_onnx", "load_networks", "stride_padding"]
