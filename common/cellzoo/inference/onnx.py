"""Networks from checkpoints, PyTorch or ONNX: the `network` of every tensor-output bundle's inference.yaml.

A checkpoint ending in `.onnx` (the `model.onnx` of a bundle's bioimage.io package) runs in onnxruntime on
the CPU behind the same interface as the PyTorch network, so sliding windows, TTA, ensembles and the
bundle's post-processing are unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cellzoo.errors import InputError

__all__ = ["OnnxNetwork", "is_onnx", "load_networks"]


def is_onnx(path: str | Path) -> bool:
    return str(path).lower().endswith(".onnx")


class OnnxNetwork(nn.Module):
    """An ONNX graph of one input and one output as a module: (B, C, H, W) tensor -> tensor on the input's device."""

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__()
        try:
            import onnxruntime
        except ImportError as err:  # an optional dependency (the `export` extra)
            raise InputError("ONNX checkpoints need onnxruntime: pip install 'cellzoo[export]'", path) from err
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types for unreadable graphs
            raise InputError(f"not a readable ONNX graph ({type(err).__name__})", path) from err
        self.input_name = self.session.get_inputs()[0].name
        self.path = str(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)})[0]
        return torch.from_numpy(out).to(x.device)


def load_networks(network_def: nn.Module, checkpoints: Sequence[str | Path], device: torch.device | str = "cpu") -> nn.ModuleList:
    """One network per checkpoint (an ensemble when several): `.onnx` files in onnxruntime, others as PyTorch
    state dicts loaded into a copy of `network_def`."""
    from cellzoo.engines import load_weights

    networks = [OnnxNetwork(c) if is_onnx(c) else load_weights(copy.deepcopy(network_def), c).to(device) for c in checkpoints]
    return nn.ModuleList(networks)
