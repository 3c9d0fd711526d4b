"""CellCentroidFormer (Wagner & Rohr, MIUA 2022) as used for PMC pretraining (Wagner et al. 2023, sec. 3.2).

ContextBlock -> EfficientNetV2 (timm, cut at stride 16) -> neck of MobileViT blocks (timm's) and
convolutions with one x2 upsampling -> two fully convolutional heads that upsample x8 back to the input
size. One class serves every stage of the method, so the pretext weights transfer by name:

- detection: heads with 1 (centroid heatmap) and 2 (height, width) sigmoid channels;
- reconstruction pretexts: the same two heads each predicting the pretext target (RGB for a colormap,
  1 channel for autoencoding, MAE-like masking and edges); the paper trains both heads separately;
- SimCLR: no heads, a projection MLP (256-128-64) on the pooled neck features.

The output is always one tensor (the heads' channels concatenated), which keeps MONAI's engines,
`cellzoo.inference.WholeImageInferer` and TorchScript tracing working unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["PARTS", "PROCEDURES", "CellCentroidFormer", "ContextBlock", "EfficientNetStride16", "apply_procedure",
           "head_fraction"]

# the network's parts, in order; training procedures freeze a prefix of them
PARTS = ("context", "backbone", "neck", "heads")
# paper sec. 4.2/4.3: fine-tuning (all weights), head evaluation (backbone + neck frozen), backbone
# evaluation (backbone frozen). The ContextBlock, trained with the backbone, is frozen with it.
PROCEDURES = {"finetune": (), "head_eval": ("context", "backbone", "neck"), "backbone_eval": ("context", "backbone")}


class ContextBlock(nn.Module):
    """Three views from slices (S(z-1), S(z), S(z+1)) given as the input's 3 channels (eq. 3).

    T(z) = [sigmoid(conv1x1(conv3x3(S(z-1)))) * S(z) + S(z), S(z), the same with S(z+1)]; the 3x3
    convolution has `features` filters (10 in the paper), the 1x1 one fuses them to one channel. A 2D
    image is given as three copies of itself.
    """

    def __init__(self, features: int = 10):
        super().__init__()
        self.previous = nn.Sequential(nn.Conv2d(1, features, 3, padding=1), nn.Conv2d(features, 1, 1))
        self.next = nn.Sequential(nn.Conv2d(1, features, 3, padding=1), nn.Conv2d(features, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        previous, current, following = x[:, 0:1], x[:, 1:2], x[:, 2:3]
        before = torch.sigmoid(self.previous(previous)) * current + current
        after = torch.sigmoid(self.next(following)) * current + current
        return torch.cat([before, current, after], dim=1)


class EfficientNetStride16(nn.Module):
    """A timm EfficientNet(V2) up to its last stride-16 stage (no weights downloaded).

    With `expand`, the expansion convolution (+ BN + SiLU) of the first stride-32 block follows, as in
    the authors' code, which cuts Keras' EfficientNetV2S at `block6a_expand_activation`.
    """

    def __init__(self, name: str = "efficientnetv2_s", expand: bool = False, **timm_args):
        super().__init__()
        import timm  # imported here: importing cellzoo does not import timm

        net = timm.create_model(name, pretrained=False, num_classes=0, **timm_args)
        stage = [info for info in net.feature_info if info["reduction"] == 16][-1]
        cut = int(stage["module"].split(".")[1]) + 1
        self.conv_stem, self.bn1 = net.conv_stem, net.bn1
        self.blocks = nn.Sequential(*net.blocks[:cut])
        self.out_channels = int(stage["num_chs"])
        self.expand = None
        if expand and cut < len(net.blocks) and hasattr(net.blocks[cut][0], "conv_pw"):
            first = net.blocks[cut][0]
            self.expand = nn.Sequential(first.conv_pw, first.bn1)
            self.out_channels = int(first.conv_pw.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.bn1(self.conv_stem(x)))
        return self.expand(x) if self.expand is not None else x


def _conv_relu_norm(in_channels: int, out_channels: int) -> list[nn.Module]:
    from timm.layers import LayerNorm2d

    # the authors' neck: Conv3x3 + ReLU, then LayerNormalization over the channels
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True), LayerNorm2d(out_channels)]


def _mobilevit(in_channels: int, out_channels: int, depth: int, heads: int, patch: int) -> nn.Module:
    from timm.models.mobilevit import MobileVitBlock

    return MobileVitBlock(in_channels, out_channels, transformer_dim=out_channels, transformer_depth=depth,
                          num_heads=heads, patch_size=patch)


class Neck(nn.Module):
    """MobileViT block + 2 convolutions, x2 upsampling, MobileViT block + 2 convolutions (stride 16 -> 8)."""

    def __init__(self, in_channels: int, dims: Sequence[int] = (256, 128), depth: int = 2, heads: int = 2,
                 patch: int = 2):
        super().__init__()
        first, second = int(dims[0]), int(dims[1])
        self.stage1 = nn.Sequential(_mobilevit(in_channels, first, depth, heads, patch),
                                    *_conv_relu_norm(first, first), *_conv_relu_norm(first, first))
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.stage2 = nn.Sequential(_mobilevit(first, second, depth, heads, patch),
                                    *_conv_relu_norm(second, 2 * second), *_conv_relu_norm(2 * second, 2 * second))
        self.out_channels = 2 * second

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage2(self.up(self.stage1(x)))


class UpsamplingBlock(nn.Sequential):
    """x2 bilinear upsampling, then (Conv3x3 + ReLU + BatchNorm) twice."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                         nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True),
                         nn.BatchNorm2d(out_channels),
                         nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True),
                         nn.BatchNorm2d(out_channels))


class Head(nn.Module):
    """Three upsampling blocks (stride 8 -> 1), Conv3x3 + ReLU, then the output Conv3x3 with a sigmoid."""

    def __init__(self, in_channels: int, filters: Sequence[int], hidden: int, out_channels: int):
        super().__init__()
        blocks, channels = [], in_channels
        for width in filters:
            blocks.append(UpsamplingBlock(channels, int(width)))
            channels = int(width)
        self.blocks = nn.Sequential(*blocks, nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(inplace=True))
        # only this layer differs between the pretext and the detector ("the top-layer is switched")
        self.out = nn.Conv2d(hidden, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.blocks(x)))


class CellCentroidFormer(nn.Module):
    """(B, 3, H, W) slices [z-1, z, z+1] -> (B, sum(out_channels), H, W), or (B, 64) with `projection_dims`.

    H and W must be multiples of 16 (32 keeps the MobileViT patches whole). `out_channels` gives each
    head's channels: (1, 2) = [centroid heatmap, height, width] for detection. `backbone_args` go to
    timm (e.g. channel_multiplier, depth_multiplier for a small CPU version). The backbone ends with the
    paper's "five blocks" (160 channels for EfficientNetV2-S); `expand_backbone` adds the expansion
    layer of the next block as the authors' code does. The paper gives no neck or head widths: the
    defaults put ~17% of the parameters in the heads, the share it states.
    """

    def __init__(self, out_channels: Sequence[int] | None = (1, 2), backbone: str = "efficientnetv2_s",
                 backbone_args: dict | None = None, expand_backbone: bool = False,
                 neck_dims: Sequence[int] = (256, 128), head_filters: Sequence[int] = (192, 96, 48),
                 head_hidden: int = 32, context_features: int = 10, transformer_depth: int = 2,
                 num_heads: int = 2, patch_size: int = 2, projection_dims: Sequence[int] | None = None):
        super().__init__()
        if (out_channels is None) == (projection_dims is None):
            raise ValueError("give either out_channels (heads) or projection_dims (SimCLR), not both")
        self.context = ContextBlock(context_features)
        self.backbone = EfficientNetStride16(backbone, expand_backbone, **dict(backbone_args or {}))
        self.neck = Neck(self.backbone.out_channels, neck_dims, transformer_depth, num_heads, patch_size)
        self.heads = nn.ModuleList(Head(self.neck.out_channels, head_filters, head_hidden, int(c))
                                   for c in (out_channels or ()))
        self.projection = None
        if projection_dims is not None:
            layers, width = [nn.AdaptiveAvgPool2d(1), nn.Flatten()], self.neck.out_channels
            for k, dim in enumerate(projection_dims):
                layers += [nn.Linear(width, int(dim))] + ([nn.ReLU(inplace=True)] if k < len(projection_dims) - 1 else [])
                width = int(dim)
            self.projection = nn.Sequential(*layers)
        self.frozen: tuple[str, ...] = ()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The neck's output (stride 8)."""
        return self.neck(self.backbone(self.context(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        if self.projection is not None:
            return self.projection(features)
        return torch.cat([head(features) for head in self.heads], dim=1)

    def freeze(self, parts: Sequence[str]) -> CellCentroidFormer:
        """Freeze `parts` (names from PARTS): no gradients, and BatchNorm statistics fixed (kept in eval mode)."""
        unknown = sorted(set(parts) - set(PARTS))
        if unknown:
            raise ValueError(f"unknown parts {unknown}; choose from {PARTS}")
        self.frozen = tuple(parts)
        for name in self.frozen:
            for parameter in getattr(self, name).parameters():
                parameter.requires_grad_(False)
        return self.train(self.training)

    def train(self, mode: bool = True) -> CellCentroidFormer:
        # engines call network.train() every iteration; frozen parts must stay in eval mode so their
        # BatchNorm running statistics (and dropout) do not change
        super().train(mode)
        for name in self.frozen:
            getattr(self, name).eval()
        return self


def apply_procedure(network: CellCentroidFormer, procedure: str = "finetune") -> CellCentroidFormer:
    """Freeze what a training procedure keeps fixed (PROCEDURES); returns the network."""
    if procedure not in PROCEDURES:
        raise ValueError(f"procedure must be one of {tuple(PROCEDURES)}, got {procedure!r}")
    return network.freeze(PROCEDURES[procedure])


def head_fraction(network: CellCentroidFormer) -> float:
    """Fraction of the parameters that lie in the heads (the paper: about 17%)."""
    total = sum(p.numel() for p in network.parameters())
    return sum(p.numel() for p in network.heads.parameters()) / total
