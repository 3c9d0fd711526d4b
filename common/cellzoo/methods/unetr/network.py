"""A 2D UNETR with a configurable patch (token) size, built from MONAI's ViT and UNETR blocks.

After Franco-Barranco et al., *Self-supervised Vision Transformers for image-to-image labeling: a BiaPy
solution to the LightMyCells Challenge* (ISBI 2024), sec. 2.2: a ViT encoder (embed 768, 12 layers, 12
heads, token size 32) and a convolutional decoder with 32 filters on the first level doubling per level,
kernel 9 (tubulin: 16 filters, kernel 7). MONAI's `UNETR` fixes the patch size at 16 (four 2x upsamplings)
and takes its skips from hidden states 3, 6, 9 (0-based, i.e. after blocks 4, 7, 10), so this network
assembles the same MONAI blocks for any power-of-two patch: log2(patch) decoder levels, one ViT skip per
level but the finest (which comes from a convolution of the input), skips after blocks 3, 6, 9, 12 for
patch 32 (1-based, as in the UNETR paper and BiaPy), and the ViT's normalised output as the bottleneck.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock
from monai.networks.blocks import TransformerBlock
from monai.networks.nets import ViT
from torch import nn

__all__ = ["UNETR2D", "default_skip_blocks", "freeze_unused_cross_attention", "mae_to_unetr_keys"]


def freeze_unused_cross_attention(module: nn.Module) -> nn.Module:
    """Freeze the cross-attention parts that MONAI's TransformerBlock creates even without cross-attention.

    Every MONAI release builds `norm_cross_attn`, and 1.4-1.5 also a whole `cross_attn` block (1.6 an
    Identity); without cross-attention neither takes part in the forward pass, so they never get a
    gradient, and DistributedDataParallel (multi_gpu_train.yaml) stops at the second step waiting for one.
    Frozen, DDP skips them; they stay in the state dict, so checkpoints keep MONAI's layout.
    """
    for block in module.modules():
        if isinstance(block, TransformerBlock) and not getattr(block, "with_cross_attention", False):
            for part in (block.norm_cross_attn, getattr(block, "cross_attn", None)):
                if isinstance(part, nn.Module):
                    part.requires_grad_(False)
    return module


def default_skip_blocks(num_layers: int, levels: int) -> tuple[int, ...]:
    """Blocks (1-based) whose outputs feed the `levels - 1` ViT skips: evenly spaced, the last one the last block.

    12 layers and patch 32 (5 levels) give (3, 6, 9, 12), the paper's and BiaPy's choice; 12 layers and
    patch 16 give (4, 8, 12).
    """
    n = levels - 1
    if n < 1 or num_layers < n:
        raise ValueError(f"{num_layers} transformer layers cannot feed {n} skip connections")
    return tuple(round(num_layers * (i + 1) / n) for i in range(n))


class UNETR2D(nn.Module):
    """2D UNETR: MONAI ViT encoder + MONAI UNETR decoder blocks, for patch sizes 2**k (k >= 2).

    Input (B, in_channels, *img_size), output (B, out_channels, *img_size). With L = log2(patch_size)
    decoder levels, level l (resolution 1/2**l, ``feature_size * 2**l`` channels) receives the ViT
    hidden state after block ``skip_blocks[l - 1]``, brought up from the token grid by transposed
    convolutions (``UnetrPrUpBlock``); level 0 receives a convolution of the input (``UnetrBasicBlock``);
    the bottleneck is the ViT's output after its final LayerNorm. ``kernel_size`` is the kernel of every
    decoder convolution (the paper: 9, tubulin 7).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        img_size: Sequence[int] | int = 1024,
        patch_size: int = 32,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_layers: int = 12,
        num_heads: int = 12,
        feature_size: int = 32,
        kernel_size: int = 9,
        skip_blocks: Sequence[int] | None = None,
        norm_name: tuple | str = "batch",
        res_block: bool = True,
        pos_embed_type: str = "sincos",
        qkv_bias: bool = False,
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        img_size = (int(img_size),) * 2 if isinstance(img_size, int) else tuple(int(s) for s in img_size)
        levels = int(round(math.log2(patch_size)))
        if patch_size < 4 or 2**levels != patch_size:
            raise ValueError(f"patch_size must be a power of two >= 4, got {patch_size}")
        if any(s % patch_size for s in img_size):
            raise ValueError(f"img_size {img_size} must be a multiple of patch_size {patch_size}")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (same-size convolutions), got {kernel_size}")
        skip_blocks = tuple(default_skip_blocks(num_layers, levels) if skip_blocks is None else skip_blocks)
        if len(skip_blocks) != levels - 1 or not all(1 <= b <= num_layers for b in skip_blocks):
            raise ValueError(f"skip_blocks must name {levels - 1} blocks in 1..{num_layers}, got {skip_blocks}")
        self.img_size, self.patch_size, self.skip_blocks = img_size, int(patch_size), skip_blocks
        self.grid = tuple(s // patch_size for s in img_size)
        self.vit = ViT(in_channels=in_channels, img_size=img_size, patch_size=patch_size, hidden_size=hidden_size,
                       mlp_dim=mlp_dim, num_layers=num_layers, num_heads=num_heads, pos_embed_type=pos_embed_type,
                       classification=False, dropout_rate=dropout_rate, spatial_dims=2, qkv_bias=qkv_bias)
        common = dict(spatial_dims=2, kernel_size=kernel_size, norm_name=norm_name, res_block=res_block)
        channels = [feature_size * 2**level for level in range(levels)]
        # encoders[0] works on the input at full resolution, encoders[l] on the skip of level l
        self.encoders = nn.ModuleList(
            [UnetrBasicBlock(in_channels=in_channels, out_channels=channels[0], stride=1, **common)]
            + [UnetrPrUpBlock(in_channels=hidden_size, out_channels=channels[level], num_layer=levels - level - 1,
                              stride=1, upsample_kernel_size=2, conv_block=True, **common)
               for level in range(1, levels)])
        # decoders[l] brings level l + 1 (the bottleneck for the last one) up to level l and merges its skip
        self.decoders = nn.ModuleList(
            [UnetrUpBlock(in_channels=hidden_size if level == levels - 1 else channels[level + 1],
                          out_channels=channels[level], upsample_kernel_size=2, **common)
             for level in range(levels)])
        self.out = UnetOutBlock(spatial_dims=2, in_channels=channels[0], out_channels=out_channels)
        freeze_unused_cross_attention(self)

    def tokens_to_map(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, hidden) tokens -> (B, hidden, grid_h, grid_w) feature map (tokens are row-major)."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and tuple(x.shape[2:]) != self.img_size:  # a trace (export) fixes the size
            raise ValueError(f"the ViT is built for {self.img_size} inputs, got {tuple(x.shape[2:])}")
        bottleneck, hidden = self.vit(x)
        skips = [self.encoders[0](x)] + [
            encoder(self.tokens_to_map(hidden[block - 1]))
            for encoder, block in zip(self.encoders[1:], self.skip_blocks)]
        y = self.tokens_to_map(bottleneck)
        for level in reversed(range(len(self.decoders))):
            y = self.decoders[level](y, skips[level])
        return self.out(y)


def mae_to_unetr_keys(state: dict) -> dict:
    """Names of a `GridMaskedAutoencoder` (MONAI `MaskedAutoEncoderViT`) state dict as the UNETR's encoder names.

    The MAE's encoder is a MONAI ViT stored flat: ``patch_embedding.*`` and ``blocks.{i}.*`` become
    ``vit.patch_embedding.*`` and ``vit.blocks.{i}.*``; its final LayerNorm, stored as the last entry of
    ``blocks`` (``blocks.{L}.weight/bias``), becomes ``vit.norm.*``. The parts only the MAE has are
    dropped: the reconstruction decoder (``decoder_*``, ``mask_tokens``) and the class token (MONAI's ViT
    without classification has none; the MAE's cls token only ever served as an extra attention slot).
    Other names (a UNETR checkpoint's own ``vit.*``, ``encoders.*``, ...) are kept, so one rename serves
    every ``init_ckpt``.
    """
    if not any(key.startswith(("blocks.", "patch_embedding.")) for key in state):
        return dict(state)
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] in ("cls_token", "mask_tokens") or parts[0].startswith("decoder_"):
            continue
        if parts[0] == "blocks" and len(parts) == 3:  # blocks.{L}.weight: the LayerNorm after the last block
            out[f"vit.norm.{parts[2]}"] = value
        elif parts[0] in ("blocks", "patch_embedding"):
            out[f"vit.{key}"] = value
        else:
            out[key] = value
    return out
