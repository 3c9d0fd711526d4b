"""UNETR data chains: one label-free plane in, its organelle (or, for the MAE, the plane itself) as target.

Training (`unetr_train_transforms`): a random focal plane of the entry, optional CLAHE, z-score per image
(input and target), mirror padding to the crop size, a random crop, light or heavy augmentation.
Validation and evaluation score whole planes; inference keeps the input's [mean, std] so the output is
denormalised with them (`unetr_output_transforms`). Images are read through `LoadImagesd` only.
"""

from __future__ import annotations

from monai.transforms import (
    CenterSpatialCropd,
    Compose,
    EnsureTyped,
    RandSpatialCropd,
    SelectItemsd,
    SpatialPadd,
)

from cellzoo.methods.unetr.augment import RandomPlaned, augmentation_chain
from cellzoo.methods.unetr.intensity import Clahed, Denormalized, ZScored
from cellzoo.methods.unetr.outputs import SaveOrganelled
from cellzoo.transforms.loading import LoadImagesd

__all__ = ["unetr_output_transforms", "unetr_predict_transforms", "unetr_train_transforms", "unetr_valid_transforms"]

# np.pad's "symmetric" mirrors repeatedly, so an image smaller than half the crop still pads (the paper: mirroring)
MIRROR = "symmetric"


def _keys(with_target: bool) -> list[str]:
    return ["image", "label"] if with_target else ["image"]


def _load(with_target: bool, clahe: bool, keep_stats: bool = False, normalise_target: bool = True) -> list:
    """Read the plane (and target), CLAHE on the input if asked, z-score."""
    keys = _keys(with_target)
    chain = [LoadImagesd(keys, plane_channels=1)]  # one label-free plane (or organelle) per file
    if clahe:
        chain.append(Clahed("image"))
    chain.append(ZScored("image", keep_stats=keep_stats))
    if with_target and normalise_target:
        chain.append(ZScored("label"))
    return chain


def unetr_train_transforms(roi_size: int = 1024, augmentation: str = "heavy", clahe: bool = False,
                           with_target: bool = True) -> Compose:
    """A random plane of the entry -> z-scored roi crop (mirror-padded when smaller) -> augmentation.

    ``with_target=False`` is the MAE's chain: the plane is its own target (the engine reads "image" twice).
    """
    keys = _keys(with_target)
    return Compose([
        RandomPlaned("image"),
        *_load(with_target, clahe),
        SpatialPadd(keys, (roi_size, roi_size), mode=MIRROR),
        RandSpatialCropd(keys, (roi_size, roi_size), random_size=False),
        *augmentation_chain(keys, "image", augmentation, roi_size),
        EnsureTyped(keys, track_meta=False),
        # an entry's other fields (its organelle files, z list) differ between entries and would not collate
        SelectItemsd(keys),
    ])


def unetr_valid_transforms(clahe: bool = False, with_target: bool = True, crop_size: int | None = None) -> Compose:
    """One plane and its target, z-scored, whole (the inferer pads and tiles it).

    ``crop_size`` (the MAE, whose network takes exactly its crop size) mirror-pads and takes the centre
    crop instead.
    """
    keys = _keys(with_target)
    chain = _load(with_target, clahe)
    if crop_size:
        chain += [SpatialPadd(keys, (crop_size, crop_size), mode=MIRROR), CenterSpatialCropd(keys, (crop_size, crop_size))]
    return Compose(chain + [EnsureTyped(keys, track_meta=False)])


def unetr_predict_transforms(clahe: bool = False, with_target: bool = False) -> Compose:
    """One plane z-scored with its [mean, std] kept (`image_stats`); with a target (evaluation), the raw target."""
    keys = _keys(with_target)
    return Compose(_load(with_target, clahe, keep_stats=True, normalise_target=False)
                   + [EnsureTyped(keys, track_meta=False)])


def unetr_output_transforms(output_dir: str | None = None, organelle: str = "Nucleus", save: bool = True) -> Compose:
    """Denormalise the prediction with the input's [mean, std]; with `save`, write it (`SaveOrganelled`)."""
    chain = [Denormalized("pred", stats_key="image_stats")]
    if save:
        if output_dir is None:
            raise ValueError("output_dir is needed to save predictions")
        chain.append(SaveOrganelled("pred", output_dir, organelle))
    return Compose(chain)

