"""In silico labeling (ISL) networks: one smp Unet with a DenseNet121 encoder, its head ending per task.

After *Learning with minimal effort: leveraging in silico labeling for cell and nucleus segmentation*
(ECCV 2022 workshops), sec. 2.2-2.3: the same smp ``Unet("densenet121")`` first regresses a fluorescence
stain (DAPI or CellMask) from 3 label-free channels; its weights then initialise a nucleus segmenter (a
shifted sigmoid on the 1-channel output) or a cell segmenter (two extra convolutions to [distance, mask
logit]). The task-specific layers are appended to smp's segmentation head, so every task's network has
the same parameter names for the shared parts and a pretext checkpoint transfers by plain name matching
(`cellzoo.engines.transfer_weights`, a bundle's ``init_ckpt``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["TASKS", "ShiftedSigmoid", "densenet_to_unet_keys", "isl_network"]

TASKS = ("fluorescence", "nuclei", "cells")
# Legacy torchvision DenseNet checkpoints name "norm1" as "norm.1"; torchvision and smp rename with this pattern.
_LEGACY_DENSE_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


class ShiftedSigmoid(nn.Module):
    """f(x) = 1 / (1 + exp(-slope * (x - centre))), the nucleus model's output activation (eq. 1).

    The pretext network regresses normalised DAPI intensities, so its outputs sit around [0, 1]; the paper
    centres the sigmoid on 0.5 to "take the different range into account" (sec. 2.2). Eq. 1 prints
    1 / (1 + exp(x - 0.5)), which decreases with x and would map bright nuclei to background; we read the
    missing minus sign as a typo (slope=1). ``slope=-1`` reproduces the printed formula literally.
    """

    def __init__(self, centre: float = 0.5, slope: float = 1.0) -> None:
        super().__init__()
        self.centre = float(centre)
        self.slope = float(slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.slope * (x - self.centre))

    def extra_repr(self) -> str:
        return f"centre={self.centre}, slope={self.slope}"


def isl_network(task: str, in_channels: int = 3, encoder_name: str = "densenet121",
                decoder_channels: Sequence[int] = (256, 128, 64, 32, 16), hidden_channels: int = 16,
                centre: float = 0.5, slope: float = 1.0) -> nn.Module:
    """The network of an ISL task; input sides must be multiples of 32 (five 2x downsamplings).

    - ``fluorescence`` (pretext): Unet -> 1 channel, the predicted stain (no activation).
    - ``nuclei``: the same, then ``ShiftedSigmoid`` -> nucleus probability (Jaccard loss, 0.5 threshold).
    - ``cells``: the same, then Conv3x3(1 -> hidden), ReLU, Conv3x3(hidden -> 2) -> [distance, mask logit].
      The paper only says "we add two Conv2d layers at the end to upscale to 2 channels"; the ReLU keeps
      the two layers from collapsing into one linear convolution.
    """
    # Imported here so that importing cellzoo does not import smp.
    import segmentation_models_pytorch as smp

    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    net = smp.Unet(encoder_name=encoder_name, encoder_weights=None, in_channels=in_channels, classes=1,
                   decoder_channels=tuple(int(c) for c in decoder_channels))
    if task == "nuclei":
        net.segmentation_head.append(ShiftedSigmoid(centre, slope))
    elif task == "cells":
        net.segmentation_head.extend([nn.Conv2d(1, hidden_channels, kernel_size=3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(hidden_channels, 2, kernel_size=3, padding=1)])
    return net


def densenet_to_unet_keys(state: dict) -> dict:
    """Names of a torchvision DenseNet state dict (an ImageNet file) as the Unet's encoder names.

    ``features.*`` become ``encoder.features.*`` (smp's DenseNet encoder is torchvision's DenseNet without
    the classifier) and legacy ``...denselayer1.norm.1.*`` names become ``...norm1.*``; other names (an ISL
    pretext checkpoint's ``encoder.*``, ``decoder.*``) are kept, so one rename serves every ``init_ckpt``.
    """
    out = {}
    for key, value in state.items():
        if key.startswith("features."):
            match = _LEGACY_DENSE_KEY.match(key)
            key = "encoder." + (match.group(1) + match.group(2) if match else key)
        out[key] = value
    return out
