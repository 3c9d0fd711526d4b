"""MAE pretraining of the UNETR's ViT encoder (paper sec. 2.2): MONAI's `MaskedAutoEncoderViT` with grid masking.

The paper pretrains "following [He et al.] but with grid-masking occlusion instead of random occlusion":
a fixed checkerboard over the tokens, 50% masked, because LightMyCells fields are not object-centric and
random masking often removes whole regions the model can then only fill with the image mean. MONAI's
`MaskedAutoEncoderViT` masks at random only, so `GridMaskedAutoencoder` overrides its masking step and
keeps everything else (patch embedding, encoder blocks, decoder), which keeps its encoder's state dict in
MONAI's ViT layout (`mae_to_unetr_keys` maps it onto `UNETR2D.vit`). Its output is one tensor, so MONAI's
engines, decollation and metrics handle it like any image: the reconstruction (every token predicted,
as the MAE decoder does) and the pixel mask of the hidden tokens as the last channel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from monai.networks.nets import MaskedAutoEncoderViT
from torch import nn

from cellzoo.methods.unetr.network import freeze_unused_cross_attention

__all__ = ["MASKING", "GridMaskedAutoencoder", "MaskedReconstructionLoss", "MaskedReconstructionMetric",
           "checkerboard_mask"]

MASKING = ("grid", "random")


def checkerboard_mask(grid: Sequence[int]) -> torch.Tensor:
    """(n_tokens,) int mask of a token grid, 1 = hidden: tokens whose row + column is even (BiaPy's grid masking)."""
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    return ((rows + cols) % 2 == 0).flatten().int()


class GridMaskedAutoencoder(MaskedAutoEncoderViT):
    """2D MAE whose forward returns (B, C + 1, H, W): the reconstruction and the mask of hidden pixels.

    ``masking="grid"`` (default) hides the fixed checkerboard of tokens (`checkerboard_mask`, 50%; the
    ratio is that of the checkerboard, ``masking_ratio`` is not used); ``"random"`` is MONAI's random
    masking at ``masking_ratio``. Encoder arguments are those of `UNETR2D`'s ViT, so its weights load
    into the UNETR; decoder defaults follow the MAE paper (512 wide, 8 blocks, 16 heads).
    """

    def __init__(
        self,
        in_channels: int = 1,
        img_size: Sequence[int] | int = 1024,
        patch_size: int = 32,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_layers: int = 12,
        num_heads: int = 12,
        masking: str = "grid",
        masking_ratio: float = 0.5,
        decoder_hidden_size: int = 512,
        decoder_mlp_dim: int = 2048,
        decoder_num_layers: int = 8,
        decoder_num_heads: int = 16,
        pos_embed_type: str = "sincos",
        qkv_bias: bool = False,
        dropout_rate: float = 0.0,
    ) -> None:
        if masking not in MASKING:
            raise ValueError(f"masking must be one of {MASKING}, got {masking!r}")
        super().__init__(in_channels=in_channels, img_size=img_size, patch_size=patch_size, hidden_size=hidden_size,
                         mlp_dim=mlp_dim, num_layers=num_layers, num_heads=num_heads, masking_ratio=masking_ratio,
                         decoder_hidden_size=decoder_hidden_size, decoder_mlp_dim=decoder_mlp_dim,
                         decoder_num_layers=decoder_num_layers, decoder_num_heads=decoder_num_heads,
                         pos_embed_type=pos_embed_type, dropout_rate=dropout_rate, spatial_dims=2, qkv_bias=qkv_bias)
        self.masking, self.in_channels = masking, int(in_channels)
        self.grid = tuple(s // p for s, p in zip(self.img_size, self.patch_size))
        # a buffer, so the mask follows the model to its device; not saved (it is a function of the grid)
        self.register_buffer("grid_mask", checkerboard_mask(self.grid), persistent=False)
        freeze_unused_cross_attention(self)

    def _masking(self, x: torch.Tensor, masking_ratio: float | None = None):
        """(visible tokens, their indices, mask 1 = hidden) as MONAI's method returns them."""
        if self.masking == "random":
            return super()._masking(x, masking_ratio)
        keep = torch.nonzero(self.grid_mask == 0).flatten()
        selected = keep.unsqueeze(0).expand(x.shape[0], -1)
        mask = self.grid_mask.unsqueeze(0).expand(x.shape[0], -1).clone()
        return x[:, keep], selected, mask

    def forward(self, x: torch.Tensor, masking_ratio: float | None = None) -> torch.Tensor:
        tokens, mask = super().forward(x, masking_ratio)
        return torch.cat([self.unpatchify(tokens), self.mask_image(mask, tokens.dtype)], dim=1)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, p*p*C) -> (B, C, H, W); each token's vector is read as (p_row, p_col, channel)."""
        (gh, gw), (ph, pw) = self.grid, self.patch_size
        x = tokens.reshape(tokens.shape[0], gh, gw, ph, pw, self.in_channels)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(tokens.shape[0], self.in_channels, gh * ph, gw * pw)

    def mask_image(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(B, N) token mask -> (B, 1, H, W) pixel mask."""
        (gh, gw), (ph, pw) = self.grid, self.patch_size
        m = mask.to(dtype).reshape(mask.shape[0], 1, gh, gw)
        return m.repeat_interleave(ph, dim=2).repeat_interleave(pw, dim=3)


def _split(output: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction, hidden-pixel mask) of a `GridMaskedAutoencoder` output, checked against the image."""
    if output.ndim != image.ndim or output.shape[1] != image.shape[1] + 1 or output.shape[2:] != image.shape[2:]:
        raise ValueError(f"MAE output {tuple(output.shape)} must be the image {tuple(image.shape)} plus a mask channel")
    return output[:, :-1], output[:, -1:]


class MaskedReconstructionLoss(nn.Module):
    """MSE on the hidden patches only (the MAE loss), from a `GridMaskedAutoencoder` output and the image.

    Every patch has the same number of pixels, so the mean over hidden pixels equals the MAE paper's mean
    over hidden patches of the per-patch MSE. ``norm_pix_loss`` compares with each patch normalised to
    zero mean and unit variance (the MAE paper's option; off here: images are z-scored already).
    """

    def __init__(self, patch_size: int = 32, norm_pix_loss: bool = False, eps: float = 1e-6) -> None:
        super().__init__()
        self.patch_size, self.norm_pix_loss, self.eps = int(patch_size), bool(norm_pix_loss), eps

    def forward(self, output: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        reconstruction, mask = _split(output, image)
        target = self._normalised(image) if self.norm_pix_loss else image
        # fp32 difference: an fp16 reconstruction minus an fp16 target loses the small residuals late in training
        squared = (reconstruction.float() - target.float()) ** 2
        hidden = mask.expand_as(squared)
        return (squared * hidden).sum() / hidden.sum().clamp_min(1.0)

    def _normalised(self, image: torch.Tensor) -> torch.Tensor:
        """Each p x p patch (over all channels) to zero mean, unit variance."""
        p, (b, c, h, w) = self.patch_size, image.shape
        patches = image.reshape(b, c, h // p, p, w // p, p)
        mean = patches.mean(dim=(1, 3, 5), keepdim=True)
        var = patches.var(dim=(1, 3, 5), keepdim=True)
        return ((patches - mean) / (var + self.eps).sqrt()).reshape(b, c, h, w)


class MaskedReconstructionMetric(CumulativeIterationMetric):
    """Per-image MSE on hidden pixels (lower is better), averaged over images: the MAE's validation metric."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        reconstruction, mask = _split(torch.as_tensor(y_pred).float(), torch.as_tensor(y).float())
        squared = (reconstruction - y.float()) ** 2 * mask
        per_image = squared.flatten(1).sum(1) / (mask.flatten(1).sum(1) * reconstruction.shape[1]).clamp_min(1.0)
        return per_image.reshape(-1, 1)

    def aggregate(self) -> torch.Tensor:
        buffer = self.get_buffer()
        if not isinstance(buffer, torch.Tensor) or buffer.numel() == 0:
            return torch.tensor(np.nan)
        return buffer.float().mean()
