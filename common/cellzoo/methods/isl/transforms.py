"""ISL data chains: label-free planes -> 3-channel input; per task, the training target.

Tasks: "fluorescence" (pretext: regress a stain such as DAPI or CellMask), "nuclei" (binary nucleus mask,
Jaccard loss) and "cells" ([distance, mask] from instance labels, MSE + alpha * BCE). Entries come from
`cellzoo.methods.isl.isl_datalist`: "image" is the list of input plane files, "target" a fluorescence file,
"label" an instance label file.
"""

from __future__ import annotations

import numpy as np
from monai.config import KeysCollection
from monai.transforms import (
    CastToTyped,
    Compose,
    CopyItemsd,
    DeleteItemsd,
    EnsureTyped,
    Lambdad,
    RandFlipd,
    RandRotate90d,
    RandSpatialCropd,
    RandSpatialCropSamplesd,
    ScaleIntensityRangePercentilesd,
    SpatialPadd,
)

from cellzoo.methods.isl.network import TASKS
from cellzoo.methods.isl.postprocess import DistanceToInstancesd, ProbabilityToInstancesd
from cellzoo.postprocess.transforms import SaveCellOutputsd, SaveFluorescenced
from cellzoo.targets.distance import LabelsToDistanced
from cellzoo.transforms.loading import LoadImagesd, to_three_channels

# percentile scaling of inputs and fluorescence targets, per channel (robust to hot pixels and background)
PERCENTILES = (1.0, 99.8)


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return task


def foreground(labels):
    """Instance labels -> float 0/1 mask."""
    return (labels > 0).astype(np.float32)


def _scale(keys: KeysCollection) -> ScaleIntensityRangePercentilesd:
    return ScaleIntensityRangePercentilesd(keys, *PERCENTILES, b_min=0.0, b_max=1.0, clip=False, channel_wise=True)


def _load(task: str, with_labels: bool) -> list:
    """Load the input planes (3 channels, scaled) and, with labels, the task's target."""
    chain = [LoadImagesd("image"), Lambdad("image", to_three_channels), _scale("image")]
    if not with_labels:
        return chain
    if task == "fluorescence":
        return chain + [LoadImagesd("target"), _scale("target")]
    chain += [LoadImagesd("label", dtype=np.int32, labels=True), CastToTyped("label", dtype=np.int32)]
    if task == "nuclei":
        # the instance labels are only the source of the mask: dropped so crops and batches stay aligned
        return chain + [Lambdad("label", foreground, overwrite="target"), DeleteItemsd("label")]
    # distance maps from whole images: cropping first would create false borders inside cut cells
    return chain + [LabelsToDistanced("label", distance_key=None, mask_key=None, target_key="target")]


def _keys(task: str) -> list[str]:
    return ["image", "target"] + (["label"] if task == "cells" else [])


def _pad(task: str, size: int) -> SpatialPadd:
    """Pad to at least size x size: the image mirrored, targets and labels with zeros (no mirrored cells)."""
    keys = _keys(task)
    # "symmetric" (np.pad) mirrors repeatedly, so an image smaller than half the size still pads
    return SpatialPadd(keys, (size, size), mode=["symmetric"] + ["constant"] * (len(keys) - 1))


def isl_train_transforms(task: str, roi_size: int = 512) -> Compose:
    """Load + target (cached part), then a random roi crop (padded if the image is smaller) and flips/rot90."""
    check_task(task)
    keys = _keys(task)
    return Compose(_load(task, with_labels=True) + [
        _pad(task, roi_size),
        RandSpatialCropd(keys, (roi_size, roi_size), random_size=False),
        RandFlipd(keys, prob=0.5, spatial_axis=0),
        RandFlipd(keys, prob=0.5, spatial_axis=1),
        RandRotate90d(keys, prob=0.5, max_k=3),
        EnsureTyped(keys, track_meta=False),
    ])


def isl_valid_transforms(task: str, crops_per_image: int = 0, crop_size: int = 512, seed: int = 0) -> Compose:
    """Whole images with their target (and instance labels for cells), no augmentation.

    With `crops_per_image` > 0, each image gives that many random crop_size crops instead, the same ones
    for a given `seed` (the paper tests on 5 random 512 x 512 crops per image).
    """
    check_task(task)
    keys = _keys(task)
    chain = _load(task, with_labels=True)
    if crops_per_image > 0:
        chain += [_pad(task, crop_size), RandSpatialCropSamplesd(keys, (crop_size, crop_size), crops_per_image,
                                                                 random_size=False)]
    # Compose seeds its random transforms from a global counter; re-seed so the crops depend on `seed` only
    return Compose(chain + [EnsureTyped(keys, track_meta=False)]).set_random_state(seed=seed)


def isl_predict_transforms(raw_key: str | None = "raw") -> Compose:
    """Input planes only; with `raw_key`, the planes as read are kept for measurements and overlays."""
    keep = [CopyItemsd("image", names=raw_key)] if raw_key else []
    return Compose([LoadImagesd("image")] + keep + [Lambdad("image", to_three_channels), _scale("image"),
                                                   EnsureTyped("image", track_meta=False)])


def isl_output_transforms(
    task: str,
    output_dir: str,
    stain_name: str = "fluorescence",
    h: float = 10.0,
    mask_threshold: float = 0.5,
    min_size: int = 16,
    write_extras: bool = True,
) -> Compose:
    """Inference post-processing and writing for an ISL task.

    fluorescence: `<stem>_<stain_name>.ome.tif`; nuclei and cells: instances (connected components of the
    thresholded probability, or h-maxima watershed of the distance map) written as label TIFF, per-cell CSV
    and overlay by `SaveCellOutputsd`, measured on the input planes.
    """
    check_task(task)
    if task == "fluorescence":
        return Compose([SaveFluorescenced("pred", output_dir, name=stain_name)])
    if task == "nuclei":
        to_instances = ProbabilityToInstancesd("pred", threshold=mask_threshold, min_size=min_size)
    else:
        to_instances = DistanceToInstancesd("pred", h=h, mask_threshold=mask_threshold, min_size=min_size)
    return Compose([to_instances, SaveCellOutputsd("pred", output_dir, write_extras=write_extras)])
