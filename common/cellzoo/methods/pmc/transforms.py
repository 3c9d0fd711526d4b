"""PMC's data chains (MONAI Compose) for the pretexts, detection training, validation and prediction.

Every chain starts from per-slice items (`cellzoo.methods.pmc.data.expand_slices`) and reads the slice with
its neighbours (`LoadContextd`, the cached, deterministic part). `zoom` resizes images (area) and masks
(nearest) by one factor first: the paper resizes whole frames to 384 px, and the cell size the network
sees is what matters.
"""

from __future__ import annotations

from monai.transforms import (
    Compose,
    CopyItemsd,
    EnsureTyped,
    RandFlipd,
    RandRotate90d,
    RandSpatialCropd,
    SelectItemsd,
    SpatialPadd,
    Zoomd,
)

from cellzoo.methods.pmc.data import LoadContextd
from cellzoo.methods.pmc.masking import RandMaskd
from cellzoo.methods.pmc.pretext import MASKING, PretextTargetd, SimCLRViewsd, check_pretext
from cellzoo.methods.pmc.targets import CentroidTargetsd

__all__ = ["detection_train_transforms", "detection_valid_transforms", "predict_transforms",
           "pretext_train_transforms", "pretext_valid_transforms"]


def _load(with_labels: bool, zoom: float, axes: str | None, label_axes: str | None, median: int) -> list:
    chain = [LoadContextd("image", label_key="label" if with_labels else None, axes=axes, label_axes=label_axes,
                          median=median)]
    if float(zoom) != 1.0:
        keys, modes = (["image", "label"], ["area", "nearest-exact"]) if with_labels else (["image"], ["area"])
        chain.append(Zoomd(keys, zoom=float(zoom), mode=modes, keep_size=False))
    return chain


def _crop_and_flip(keys: list[str], roi_size: int) -> list:
    """Pad to roi (image mirrored, labels with zeros), random roi crop, flips and 90-degree rotations."""
    return [SpatialPadd(keys, (roi_size, roi_size), mode=["symmetric"] + ["constant"] * (len(keys) - 1)),
            RandSpatialCropd(keys, (roi_size, roi_size), random_size=False),
            RandFlipd(keys, prob=0.5, spatial_axis=0), RandFlipd(keys, prob=0.5, spatial_axis=1),
            RandRotate90d(keys, prob=0.5, max_k=3)]


def detection_train_transforms(roi_size: int = 384, size_scale: float = 384.0, zoom: float = 1.0,
                               axes: str | None = None, label_axes: str | None = None, median: int = 3) -> Compose:
    """Slices + mask -> random crop, flips, rot90 -> {image (3, roi, roi), target [heatmap, height, width]}.

    Targets come from the cropped mask, so a cell cut by the crop gets the box of its visible part.
    """
    return Compose(_load(True, zoom, axes, label_axes, median) + _crop_and_flip(["image", "label"], roi_size) + [
        CentroidTargetsd("label", target_key="target", size_scale=size_scale),
        SelectItemsd(["image", "target"]),
        EnsureTyped(["image", "target"], track_meta=False),
    ])


def detection_valid_transforms(zoom: float = 1.0, axes: str | None = None, label_axes: str | None = None,
                               median: int = 3) -> Compose:
    """Whole slices with their masks: {image (3, H, W), label (1, H, W)}."""
    return Compose(_load(True, zoom, axes, label_axes, median) + [
        SelectItemsd(["image", "label"]), EnsureTyped(["image", "label"], track_meta=False)])


def predict_transforms(zoom: float = 1.0, axes: str | None = None, median: int = 3, with_labels: bool = False,
                       label_axes: str | None = None) -> Compose:
    """Whole slices for inference (and evaluation, `with_labels`); `raw` keeps the slices before the zoom."""
    keep = ["image", "raw", "name", "image_path", "slice", "n_slices", "group_size"] + (["label"] if with_labels else [])
    chain = [CopyItemsd("image", names="image_path"),
             LoadContextd("image", label_key="label" if with_labels else None, axes=axes, label_axes=label_axes,
                          median=median),
             CopyItemsd("image", names="raw")]
    if float(zoom) != 1.0:
        keys, modes = (["image", "label"], ["area", "nearest-exact"]) if with_labels else (["image"], ["area"])
        chain.append(Zoomd(keys, zoom=float(zoom), mode=modes, keep_size=False))
    tensors = ["image", "raw"] + (["label"] if with_labels else [])
    return Compose(chain + [SelectItemsd(keep), EnsureTyped(tensors, track_meta=False)])


def _pretext_target(pretext: str, colormap: str, shared_mask: bool, masking: dict | None) -> list:
    chain = [PretextTargetd("image", pretext=pretext, colormap=colormap)]
    if pretext in MASKING and not shared_mask:
        chain.append(RandMaskd("image", scheme=MASKING[pretext], **dict(masking or {})))
    return chain


def pretext_train_transforms(pretext: str = "pmc", roi_size: int = 384, colormap: str = "nipy_spectral",
                             shared_mask: bool = False, masking: dict | None = None, zoom: float = 1.0,
                             axes: str | None = None, median: int = 3) -> Compose:
    """Slices -> random crop, flips, rot90 -> the pretext's {image, target} (SimCLR: {image: 2 views}).

    `masking` holds the options of the pretext's masking scheme (patch, border, prob / patch, ratio);
    with `shared_mask`, masking is left to the batch (`PretextBatch`).
    """
    check_pretext(pretext)
    chain = _load(False, zoom, axes, None, median) + _crop_and_flip(["image"], roi_size)
    if pretext == "simclr":
        return Compose(chain + [SimCLRViewsd("image"), SelectItemsd(["image"]), EnsureTyped("image", track_meta=False)])
    return Compose(chain + _pretext_target(pretext, colormap, shared_mask, masking) + [
        SelectItemsd(["image", "target"]), EnsureTyped(["image", "target"], track_meta=False)])


def pretext_valid_transforms(pretext: str = "pmc", roi_size: int = 384, colormap: str = "nipy_spectral",
                             shared_mask: bool = False, masking: dict | None = None, zoom: float = 1.0,
                             axes: str | None = None, median: int = 3, seed: int = 0) -> Compose:
    """Whole slices with the pretext target (input masked as in training, with fixed masks per `seed`).

    SimCLR validates on views of random crops like its training (the loss needs equal-sized batches).
    """
    if pretext == "simclr":
        return pretext_train_transforms(pretext, roi_size, zoom=zoom, axes=axes, median=median).set_random_state(seed)
    chain = _load(False, zoom, axes, None, median) + _pretext_target(pretext, colormap, shared_mask, masking)
    return Compose(chain + [SelectItemsd(["image", "target"]),
                            EnsureTyped(["image", "target"], track_meta=False)]).set_random_state(seed)
