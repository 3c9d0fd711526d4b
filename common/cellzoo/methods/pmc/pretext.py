"""The pretexts PMC is compared with (paper sec. 4.2-4.3), selected by one name.

| pretext      | network input              | target                                      | loss, metric        |
| ---          | ---                        | ---                                         | ---                 |
| `pmc`        | padded-masked slices       | the centre slice through a colormap (RGB)   | MSE, SSIM           |
| `colorize`   | slices                     | the centre slice through a colormap (RGB)   | MSE, SSIM           |
| `autoencode` | slices                     | the centre slice                            | MSE, SSIM           |
| `mae_like`   | MAE-masked slices (75%)    | the centre slice                            | MSE, SSIM           |
| `edge`       | slices                     | Sobel edge magnitude of the centre slice    | MSE, SSIM           |
| `simclr`     | two augmented views        | (none: views of one crop attract)           | NT-Xent, NT-Xent    |

Reconstruction pretexts use both heads of `CellCentroidFormer`, each predicting the target (the paper trains
them separately and reports their mean SSIM); SimCLR replaces the heads by a 256-128-64 projection.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.losses import ContrastiveLoss
from monai.transforms import (
    Compose,
    MapTransform,
    RandFlip,
    Randomizable,
    RandRotate,
    RandScaleIntensity,
    RandShiftIntensity,
    RandSpatialCrop,
    Resize,
)
from skimage.filters import sobel
from torch import nn

from cellzoo.methods.pmc.colormaps import colorize
from cellzoo.methods.pmc.masking import BatchMasking

__all__ = ["MASKING", "PRETEXTS", "HeadsLoss", "PretextBatch", "PretextTargetd", "SimCLRViewsd",
           "ViewsContrastiveLoss", "heads_and_target", "pretext_channels"]

PRETEXTS = ("pmc", "colorize", "autoencode", "mae_like", "edge", "simclr")
# the masking scheme each pretext applies to its input
MASKING = {"pmc": "padded", "mae_like": "mae"}


def check_pretext(pretext: str) -> str:
    if pretext not in PRETEXTS:
        raise ValueError(f"pretext must be one of {PRETEXTS}, got {pretext!r}")
    return pretext


def pretext_channels(pretext: str) -> tuple[int, int] | None:
    """Channels of each of the two heads for a pretext (None: SimCLR has no heads)."""
    check_pretext(pretext)
    if pretext == "simclr":
        return None
    return (3, 3) if pretext in ("pmc", "colorize") else (1, 1)


def pretext_target(centre: np.ndarray, pretext: str, colormap: str = "nipy_spectral") -> np.ndarray:
    """(C, H, W) target of a reconstruction pretext from the (1, H, W) centre slice in [0, 1]."""
    if pretext in ("pmc", "colorize"):
        return colorize(centre, colormap)
    if pretext in ("autoencode", "mae_like"):
        return np.array(centre, dtype=np.float32)
    if pretext == "edge":
        edges = sobel(centre[0])
        peak = float(edges.max())
        return (edges / peak if peak > 0 else edges)[None].astype(np.float32)
    raise ValueError(f"pretext {pretext!r} has no target image")


class PretextTargetd(MapTransform):
    """The pretext target of the (3, H, W) slices under `keys` (from the centre slice) under `target_key`."""

    def __init__(self, keys: KeysCollection = "image", pretext: str = "pmc", colormap: str = "nipy_spectral",
                 target_key: str = "target", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.pretext, self.colormap, self.target_key = check_pretext(pretext), colormap, target_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            centre = np.asarray(torch.as_tensor(d[key]).cpu())[1:2]
            d[self.target_key] = pretext_target(centre, self.pretext, self.colormap)
        return d


class SimCLRViewsd(Randomizable, MapTransform):
    """(C, H, W) under `keys` -> (2, C, H, W): two independently augmented views of it.

    Mild geometry for time-lapse frames (paper sec. 4.3): rotations within +-10 degrees and crops of at
    least 90% of the area, resized back; flips; and a colour-affine change (scale and shift of the
    intensities), which the 3-channel input lets act on grey images. MONAI's transforms do each step.
    """

    def __init__(self, keys: KeysCollection = "image", max_degrees: float = 10.0, min_area: float = 0.9,
                 intensity_scale: float = 0.3, intensity_shift: float = 0.1, allow_missing_keys: bool = False):
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.max_radians = float(np.deg2rad(max_degrees))
        self.min_side = float(np.sqrt(min_area))
        self.intensity_scale, self.intensity_shift = float(intensity_scale), float(intensity_shift)

    def _augment(self, image):
        size = image.shape[1:]
        crop = tuple(max(1, round(s * self.min_side)) for s in size)
        chain = Compose([
            RandRotate(range_x=self.max_radians, prob=1.0, keep_size=True, padding_mode="reflection"),
            RandSpatialCrop(crop, max_roi_size=size, random_size=True),
            Resize(size, mode="bilinear"),
            RandFlip(prob=0.5, spatial_axis=0),
            RandFlip(prob=0.5, spatial_axis=1),
            RandScaleIntensity(factors=self.intensity_scale, prob=0.8),
            RandShiftIntensity(offsets=self.intensity_shift, prob=0.8),
        ]).set_random_state(seed=int(self.R.randint(2**31)))
        return torch.as_tensor(chain(image)).float()

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key]).float()
            d[key] = torch.stack([self._augment(image), self._augment(image)])
        return d


class PretextBatch:
    """`prepare_batch` of the pretext engines: (input, target) on the device.

    SimCLR (`views`): the (B, 2, C, H, W) views become one (2B, C, H, W) batch, all first views first;
    the target is a placeholder. `masking` (a `BatchMasking`) masks the whole batch with one mask.
    """

    def __init__(self, views: bool = False, masking: BatchMasking | None = None, image_key: str = "image",
                 target_key: str = "target"):
        self.views, self.masking = bool(views), masking
        self.image_key, self.target_key = image_key, target_key

    def __call__(self, batch: dict, device=None, non_blocking: bool = False, **kwargs):
        image = torch.as_tensor(batch[self.image_key]).to(device=device, non_blocking=non_blocking)
        if self.views:
            image = torch.cat([image[:, 0], image[:, 1]], dim=0)
            return image, torch.zeros(image.shape[0], device=image.device)
        if self.masking is not None:
            image = self.masking(image)
        return image, torch.as_tensor(batch[self.target_key]).to(device=device, non_blocking=non_blocking)


class HeadsLoss(nn.Module):
    """Mean over the heads of `loss(head output, target)`: each head is trained on the whole target."""

    def __init__(self, n_heads: int = 2, loss: nn.Module | None = None):
        super().__init__()
        self.n_heads, self.loss = int(n_heads), loss if loss is not None else nn.MSELoss()

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        heads = torch.chunk(prediction, self.n_heads, dim=1)
        return torch.stack([self.loss(head, target) for head in heads]).mean()


class ViewsContrastiveLoss(nn.Module):
    """NT-Xent (MONAI's ContrastiveLoss) between the first and second half of a (2B, D) batch of embeddings."""

    def __init__(self, temperature: float = 0.1):
        super().__init__()
        self.loss = ContrastiveLoss(temperature=temperature)

    def forward(self, embeddings: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        first, second = torch.chunk(embeddings, 2, dim=0)
        return self.loss(first, second)


def heads_and_target(output, n_heads: int = 2):
    """Engine output -> (prediction, target repeated per head), for metrics over every head's channels."""
    from monai.handlers import from_engine

    prediction, target = from_engine(["pred", "label"])(output)
    return prediction, [torch.cat([t] * n_heads, dim=0) for t in target]
