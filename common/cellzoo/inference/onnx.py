"""Networks from checkpoints, PyTorch or ONNX: the `network` of every tensor-output bundle's inference.yaml.

A checkpoint ending in `.onnx` (the `model.onnx` of a bundle's bioimage.io package) runs in onnxruntime, on
the GPU where onnxruntime has its CUDA provider (the onnxruntime-gpu package), else on the CPU, behind the same interface as the PyTorch network, so sliding windows, TTA, ensembles and the
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

__all__ = ["OnnxNetwork", "is_onnx", "load_networks", "onnx_providers"]
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def is_onnx(path: str | Path) -> bool:
    return str(path).lower().endswith(".onnx")


def onnx_providers(available: Sequence[str], cuda: bool | None = None) -> list[str]:
    """onnxruntime's execution providers to ask for, best first: CUDA when both onnxruntime and torch see a
    GPU, then the CPU (onnxruntime falls back along the list)."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    wanted = PREFERRED_PROVIDERS if cuda else PREFERRED_PROVIDERS[1:]
    return [name for name in wanted if name in available] or ["CPUExecutionProvider"]


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
            providers = onnx_providers(onnxruntime.get_available_providers())
            self.session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types for unreadable graphs
            raise InputError(f"not a readable ONNX graph ({type(err).__name__})", path) from err
        self.input_name = self.session.get_inputs()[0].name
        self.path = str(path)

    def check_fits(self, network: nn.Module) -> None:
        """Refuse a graph whose input (one, rank 4, its channels) or output channels differ from the bundle's
        network: another bundle's model.onnx would otherwise run and write wrong predictions."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = inputs[0].shape
        if len(inputs) != 1 or len(shape) != 4 or not isinstance(shape[1], int):
            raise InputError(f"the ONNX graph's inputs {[(i.name, i.shape) for i in inputs]} are not one (B, C, H, W) "
                             "image: not this bundle's network", self.path)
        window = [d if isinstance(d, int) else 64 for d in shape[2:]]
        try:
            with torch.no_grad():
                expected = _first_tensor(copy.deepcopy(network).eval()(torch.zeros(1, shape[1], *window)))
        except (RuntimeError, ValueError) as err:
            raise InputError(f"the ONNX graph takes {shape[1]} input channels, which this bundle's network does not",
                             self.path) from err
        channels = outputs[0].shape[1] if len(outputs[0].shape) > 1 else None
        if channels != expected.shape[1]:
            raise InputError(f"the ONNX graph gives {channels} output channels, this bundle's network "
                             f"{expected.shape[1]}: not this bundle's network", self.path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)})[0]
        return torch.from_numpy(out).to(x.device)


def load_networks(network_def: nn.Module, checkpoints: Sequence[str | Path], device: torch.device | str = "cpu") -> nn.ModuleList:
    """One network per checkpoint (an ensemble when several): `.onnx` files in onnxruntime, others as PyTorch
    state dicts loaded into a copy of `network_def`."""
    from cellzoo.engines import load_weights

    networks = []
    for checkpoint in checkpoints:
        if is_onnx(checkpoint):
            networks.append(OnnxNetwork(checkpoint))
            networks[-1].check_fits(network_def)
        else:
            networks.append(load_weights(copy.deepcopy(network_def), checkpoint).to(device))
    return nn.ModuleList(networks)


def _first_tensor(output) -> torch.Tensor:
    """The network's output, or its first tensor when it returns several (what the ONNX graph's output is)."""
    if isinstance(output, torch.Tensor):
        return output
    values = output.values() if isinstance(output, dict) else output
    return next(v for v in values if isinstance(v, torch.Tensor))
