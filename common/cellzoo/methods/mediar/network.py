"""MEDIAR-Former: SegFormer (MiT) encoder + MA-Net decoder with separate cell-probability and flow heads."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MEDIARFormer", "swap_activations"]


def swap_activations(module: nn.Module, old: type[nn.Module], new: type[nn.Module]) -> int:
    """Replace every `old` activation under `module` by a fresh `new(inplace=True)`; return how many."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, old):
            setattr(module, name, new(inplace=True))
            count += 1
        else:
            count += swap_activations(child, old, new)
    return count


def _head(in_channels: int, out_channels: int) -> nn.Sequential:
    """conv3x3(C -> C/2), Mish, BatchNorm, conv3x3(C/2 -> out), as in MEDIAR's DeepSegmentationHead."""
    hidden = in_channels // 2
    # Layer indices 0/2/3 match the reference head, so published MEDIAR state_dicts load unchanged.
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, kernel_size=3, padding=1),
        nn.Mish(inplace=True),
        nn.BatchNorm2d(hidden),
        nn.Conv2d(hidden, out_channels, kernel_size=3, padding=1),
    )


class MEDIARFormer(nn.Module):
    """smp MAnet (MiT encoder) with Mish activations and two heads; output [flow_y, flow_x, cellprob]."""

    def __init__(
        self,
        encoder_name: str = "mit_b5",
        decoder_channels: Sequence[int] = (1024, 512, 256, 128, 64),
        decoder_pab_channels: int = 256,
        in_channels: int = 3,
        classes: int = 2,
    ) -> None:
        super().__init__()
        # Imported here so that importing cellzoo does not import smp (slow) unless a network is built.
        import segmentation_models_pytorch as smp

        base = smp.MAnet(
            encoder_name=encoder_name,
            encoder_weights=None,  # never download; weights load from local files (cellzoo.engines.weights)
            decoder_channels=tuple(decoder_channels),
            decoder_pab_channels=decoder_pab_channels,
            in_channels=in_channels,
            classes=1,
        )
        # Keep encoder and decoder only: smp's single segmentation head is replaced by two heads.
        self.encoder = base.encoder
        self.decoder = base.decoder
        # The paper uses Mish in encoder and decoder (sec. 5.1); MiT encoders use GELU, so only the decoder changes.
        swap_activations(self.encoder, nn.ReLU, nn.Mish)
        swap_activations(self.decoder, nn.ReLU, nn.Mish)
        last = int(decoder_channels[-1])
        self.cellprob_head = _head(last, 1)
        self.gradflow_head = _head(last, classes)
        self.output_stride = int(self.encoder.output_stride)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless x is (B, C, H, W) with H and W divisible by the encoder's output stride."""
        if x.ndim != 4:
            raise ValueError(f"MEDIARFormer expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        s = self.output_stride
        if h % s or w % s:
            raise ValueError(
                f"MEDIARFormer input sides must be divisible by {s}, got {h}x{w}; "
                f"pad to {-(-h // s) * s}x{-(-w // s) * s} (e.g. monai DivisiblePad(k={s}))"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return (B, 2 + 1, H, W) logits ordered [flow_y, flow_x, cellprob]."""
        self.check_input(x)
        features = self.decoder(_placeholder_from_input(self.encoder(x), x))
        return torch.cat([self.gradflow_head(features), self.cellprob_head(features)], dim=1)


def _placeholder_from_input(features: list[torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    """smp's MiT encoder puts a 0-channel placeholder at stride 2, made with `torch.empty(device=x.device)`:
    a TorchScript trace records that device as a constant, so a trace made on the CPU would build the
    placeholder on the CPU when run on a GPU, and the decoder's concatenation would mix devices. The same
    placeholder as a slice of the input follows the input's device in a trace (checked by
    tests/test_export_bioimageio.py: no device constant in the traced graph)."""
    if len(features) > 1 and features[1].shape[1] == 0:
        features = [features[0], x[:, :0, ::2, ::2], *features[2:]]
    return features

