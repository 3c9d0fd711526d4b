"""In silico labeling (ISL) networks: a U-Net with a DenseNet121 encoder and its transfer variants.

Paper 003 (ISL as pretraining), sec. 2.2-2.3: the same smp ``Unet("densenet121")`` ("U-net 'on steroids'")
first regresses a fluorescence image (DAPI or CellMask) from 3 label-free channels; its weights then
initialise a nucleus segmenter (``ShiftedSigmoid`` on the 1-channel output) or a cell segmenter
(``ISLCellNet``: two extra convolutions to [distance, mask logit]).

Initialisation modes, chosen with ``init`` (see ``parse_init``):

* ``None`` or ``"scratch"``: random weights (smp defaults).
* ``"pretext:<path>"``: a state dict of an ``isl_unet`` saved by the pretext training (plain or under the
  ``"model"`` key of a MONAI checkpoint). Every tensor whose name and shape match is loaded, encoder,
  decoder and segmentation head; a head of another shape (e.g. 2 outputs) is skipped and logged.
* ``"imagenet:<path>"``: an ImageNet-style DenseNet121 state dict in torchvision format, the keys of
  ``torchvision.models.densenet121().state_dict()`` (``features.conv0.weight``,
  ``features.denseblock1.denselayer1.norm1.weight``, ..., ``classifier.*``). The legacy torchvision
  names (``...denselayer1.norm.1.weight``) are accepted too. Loaded into the encoder only; smp's
  DenseNet encoder is torchvision's ``DenseNet`` without ``classifier``, so names match as they are.
* a bare path: the mode is read from the keys (``encoder.*`` -> pretext, ``features.*`` -> imagenet).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from cellzoo.engines.checkpoints import read_state_dict
from cellzoo.errors import InputError

__all__ = [
    "INIT_MODES",
    "ISLCellNet",
    "ISLNucleusNet",
    "isl_network",
    "ShiftedSigmoid",
    "initialise_unet",
    "isl_unet",
    "parse_init",
    "torchvision_densenet_keys",
]

logger = logging.getLogger(__name__)

INIT_MODES = ("scratch", "pretext", "imagenet")
# Legacy torchvision DenseNet checkpoints name "norm1" as "norm.1"; torchvision and smp rename with this pattern.
_LEGACY_DENSE_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def isl_unet(
    in_channels: int = 3,
    out_channels: int = 1,
    encoder_name: str = "densenet121",
    encoder_weights: str | None = None,
    decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
    init: str | Path | None = None,
) -> nn.Module:
    """smp ``Unet`` with a DenseNet encoder and no output activation (paper 003, sec. 2.2, Fig. 1d).

    Input height and width must be multiples of 32 (five 2x downsamplings in the encoder).
    ``encoder_weights`` is passed to smp (``"imagenet"`` would download; keep None and use ``init``).
    """
    # Imported here so that cellzoo without the "methods" extra still imports.
    import segmentation_models_pytorch as smp

    net = smp.Unet(
        encoder_name=encoder_name,
        encoder_weights=encoder_weights,
        decoder_channels=tuple(int(c) for c in decoder_channels),
        in_channels=in_channels,
        classes=out_channels,
    )
    initialise_unet(net, init)
    return net


def parse_init(init: str | Path | None) -> tuple[str, Path | None]:
    """(mode, path) for an ``init`` value; mode is one of INIT_MODES or "auto" for a bare path."""
    if init is None or str(init) == "scratch":
        return "scratch", None
    text = str(init)
    for mode in ("pretext", "imagenet"):
        if text.startswith(mode + ":"):
            return mode, Path(text[len(mode) + 1 :])
    return "auto", Path(text)


def initialise_unet(net: nn.Module, init: str | Path | None) -> dict:
    """Load ``init`` into an smp Unet in place; returns {"mode": str, "loaded": [names], "skipped": [names]}."""
    mode, path = parse_init(init)
    if path is None:
        return {"mode": mode, "loaded": [], "skipped": []}
    state = read_state_dict(path)
    if mode == "auto":
        mode = _detect_mode(state, path)
    if mode == "imagenet":
        target, state = net.encoder, torchvision_densenet_keys(state)
    else:
        target = net
    loaded, skipped = _load_matching(target, state)
    if not loaded:
        raise InputError(f"no tensor of this {mode} file matches the network (expected keys like "
                         f"{next(iter(target.state_dict()))!r})", path)
    logger.info("%s init from %s: loaded %d tensors, skipped %d %s", mode, path, len(loaded), len(skipped), skipped)
    return {"mode": mode, "loaded": loaded, "skipped": skipped}


def _detect_mode(state: dict, path: Path) -> str:
    """Pretext checkpoints are whole-Unet state dicts (encoder.*); ImageNet files are torchvision (features.*)."""
    keys = list(state)
    if any(k.startswith("encoder.") for k in keys):
        return "pretext"
    if any(k.startswith("features.") for k in keys):
        return "imagenet"
    raise InputError("unknown weight file: neither an ISL pretext checkpoint (encoder.*, decoder.* keys) nor a "
                     "torchvision DenseNet state dict (features.* keys); prefix the path with pretext: or imagenet:",
                     path)


def torchvision_densenet_keys(state: dict) -> dict:
    """Copy of a torchvision DenseNet state dict with legacy names (norm.1) renamed (norm1).

    ``classifier.*`` stays: the encoder has no classifier, so those tensors are reported as skipped.
    """
    out = {}
    for key, value in state.items():
        match = _LEGACY_DENSE_KEY.match(key)
        out[match.group(1) + match.group(2) if match else key] = value
    return out


def _load_matching(module: nn.Module, state: dict) -> tuple[list[str], list[str]]:
    """Copy every tensor of `state` whose name and shape match `module`; return (loaded, skipped) names."""
    # Written by hand: load_state_dict(strict=False) skips missing names but fails on shape mismatches.
    own = module.state_dict()
    loaded = [k for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)]
    skipped = sorted(set(state) - set(loaded))
    # nn.Module's method, called directly: smp's DenseNetEncoder overrides load_state_dict as strict-only.
    nn.Module.load_state_dict(module, {k: state[k] for k in loaded}, strict=False)
    return loaded, skipped


class ShiftedSigmoid(nn.Module):
    """f(x) = 1 / (1 + exp(-slope * (x - centre))), the nucleus model's output activation (paper 003, eq. 1).

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


class ISLCellNet(nn.Module):
    """Cell transfer model (paper 003, sec. 2.3, Fig. 5b): 1-channel ISL Unet + two Conv2d -> 2 channels.

    Output (B, 2, H, W): channel 0 = distance map (regression), channel 1 = mask logit (for
    BCEWithLogits). The paper only says "we add two Conv2d layers at the end to upscale to 2 channels";
    kernel sizes and the activation between them are not given. Our choice: Conv3x3(1 -> hidden), ReLU,
    Conv3x3(hidden -> 2); the ReLU keeps the two layers from collapsing into one linear convolution.
    ``init`` initialises the Unet only (see ``isl_unet``); the two added layers always start random.
    """

    def __init__(
        self,
        in_channels: int = 3,
        encoder_name: str = "densenet121",
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        hidden_channels: int = 16,
        init: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.unet = isl_unet(in_channels, 1, encoder_name, None, decoder_channels, init=init)
        self.head = nn.Sequential(
            nn.Conv2d(1, hidden_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, 2, kernel_size=3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.unet(x))


class ISLNucleusNet(nn.Module):
    """Nucleus transfer model (paper 003, sec. 2.2): the 1-channel ISL Unet followed by ``ShiftedSigmoid``.

    Output (B, 1, H, W) nucleus probabilities, for the Jaccard loss and a 0.5 threshold.
    """

    def __init__(
        self,
        in_channels: int = 3,
        encoder_name: str = "densenet121",
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        init: str | Path | None = None,
        centre: float = 0.5,
        slope: float = 1.0,
    ) -> None:
        super().__init__()
        self.unet = isl_unet(in_channels, 1, encoder_name, None, decoder_channels, init=init)
        self.activation = ShiftedSigmoid(centre, slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.unet(x))


def isl_network(
    task: str,
    in_channels: int = 3,
    encoder_name: str = "densenet121",
    decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
    init: str | Path | None = None,
) -> nn.Module:
    """The network of an ISL task: "fluorescence" (pretext Unet, 1 output), "nuclei" or "cells"."""
    if task == "fluorescence":
        return isl_unet(in_channels, 1, encoder_name, None, decoder_channels, init=init)
    if task == "nuclei":
        return ISLNucleusNet(in_channels, encoder_name, decoder_channels, init=init)
    if task == "cells":
        return ISLCellNet(in_channels, encoder_name, decoder_channels, init=init)
    raise ValueError(f"task must be fluorescence, nuclei or cells, got {task!r}")
