"""MEDIAR train / validation transform chains (MEDIAR Table 1, METHODS.md sec. 4) built from MONAI transforms."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
from monai.transforms import (
    CastToTyped,
    Compose,
    CopyItemsd,
    EnsureTyped,
    Lambda,
    Lambdad,
    RandAdjustContrastd,
    RandGaussianNoised,
    RandGaussianSharpend,
    RandGaussianSmoothd,
    RandHistogramShiftd,
    RandSpatialCropd,
    RandZoomd,
    ScaleIntensityRangePercentilesd,
    SpatialPadd,
)

from cellzoo.methods.mediar.boundary import BoundaryExclusiond
from cellzoo.methods.mediar.intensity import CellAwareIntensityd
from cellzoo.targets.flow_geometry import NormalizeFlowsd, RandFlowFlipd, RandFlowRotate90d
from cellzoo.targets.flows import LabelsToFlowsd
from cellzoo.transforms.loading import LoadImagesd, to_three_channels

__all__ = ["mediar_predict_transforms", "mediar_train_transforms", "mediar_valid_transforms", "stack_target"]


def _channel_first(x: np.ndarray) -> np.ndarray:
    """Add a leading channel axis to 2D arrays (already-loaded inputs)."""
    return x[None] if x.ndim == 2 else x


def _load(keys: Sequence[str], load: bool) -> list:
    """Read files (load=True) or accept arrays, giving channel-first float32 data."""
    if load:
        image_key, *label_keys = keys
        return [LoadImagesd(image_key)] + ([LoadImagesd(label_keys, dtype=np.int32, labels=True)] if label_keys else [])
    return [Lambdad(keys, _channel_first), EnsureTyped(keys, data_type="numpy", dtype=np.float32, track_meta=False)]


def _preprocess(img_key: str, percentiles: tuple[float, float], channel_wise: bool) -> list:
    """3 channels, percentile clip and scale to [0, 1] (MEDIAR Table 1 (P) rows)."""
    # Z-normalising and then min-max scaling to [0, 1] equals min-max scaling alone (both affine), so
    # clip + normalise + scale collapse into one percentile rescale with clipping.
    return [
        Lambdad(img_key, to_three_channels),
        ScaleIntensityRangePercentilesd(
            img_key, *percentiles, b_min=0.0, b_max=1.0, clip=True, channel_wise=channel_wise
        ),
    ]


def _spatial(keys: Sequence[str], flow_key: str, roi_size: int, zoom: tuple[float, float]) -> list:
    """Zoom (0.5), pad + random crop to roi, axis flip (0.5), rot90 (0.5), moving the cached flows along."""
    img_key, label_key, *others = keys
    moved = [img_key, label_key, *others, flow_key]
    # "area" for the image as in the reference code; labels and masks stay integer, hence nearest.
    modes = ("area", "nearest", *("nearest" for _ in others), "bilinear")
    return [
        RandZoomd(moved, prob=0.5, min_zoom=zoom[0], max_zoom=zoom[1], mode=modes, keep_size=False),
        SpatialPadd(moved, spatial_size=(roi_size, roi_size)),
        RandSpatialCropd(moved, roi_size=(roi_size, roi_size), random_size=False),
        RandFlowFlipd([img_key, label_key, *others], flow_key=flow_key, prob=0.5),
        RandFlowRotate90d([img_key, label_key, *others], flow_key=flow_key, prob=0.5),
        # Zoom interpolates vectors across cell borders; renormalise to unit length inside cells.
        NormalizeFlowsd(flow_key=flow_key, label_key=label_key),
        CastToTyped([label_key, *others], dtype=np.int32),  # zoom returns floats
    ]


def _intensity(img_key: str, label_key: str, p: float, gamma: tuple[float, float], cell_aware: float) -> list:
    """Cell-aware intensity, noise, contrast, smoothing, histogram shift, sharpening (p each)."""
    return [
        CellAwareIntensityd((img_key,), label_key=label_key, prob=cell_aware),
        RandGaussianNoised(img_key, prob=p, mean=0.0, std=0.1),
        RandAdjustContrastd(img_key, prob=p, gamma=gamma),
        RandGaussianSmoothd(img_key, prob=p, sigma_x=(1.0, 1.0), sigma_y=(1.0, 1.0)),
        RandHistogramShiftd(img_key, prob=p, num_control_points=3),
        # MONAI defaults are the paper's: sigma1 in [0.5, 1], sigma2 0.5, alpha in [10, 30].
        RandGaussianSharpend(img_key, prob=p),
    ]


def _flows(label_key: str, flow_key: str) -> list:
    """Integer instance labels, then their flows: deterministic, so CacheDataset caches them once."""
    return [CastToTyped(label_key, dtype=np.int32), LabelsToFlowsd(label_key, flow_key=flow_key)]


def stack_target(data: dict, flow_key: str, label_key: str, ignore_key: str | None, target_key: str) -> dict:
    """Add `target_key` = [flow_y, flow_x, cell(, ignore)] as float32, the layout MEDIARLoss reads."""
    d = dict(data)
    parts = [np.asarray(d[flow_key], np.float32), (np.asarray(d[label_key]) > 0).astype(np.float32)]
    if ignore_key is not None:
        parts.append((np.asarray(d[ignore_key]) > 0).astype(np.float32))
    d[target_key] = np.concatenate(parts, axis=0)
    return d


def mediar_train_transforms(
    roi_size: int = 512,
    keys: Sequence[str] = ("image", "label"),
    boundary_exclusion: bool = False,
    load: bool = True,
    flow_key: str = "flows",
    target_key: str = "target",
    ignore_key: str | None = None,
    channel_wise: bool = True,
    percentiles: tuple[float, float] = (0.0, 99.5),
    zoom: tuple[float, float] = (0.25, 1.5),
    intensity_prob: float = 0.25,
    cell_aware_prob: float = 0.25,
    contrast_gamma: tuple[float, float] = (0.5, 2.0),
) -> Compose:
    """MEDIAR training chain: image (3, roi, roi) in [0, 1], label (1, roi, roi) int32, flows (2, roi, roi),
    and target (3 or 4, roi, roi) = [flow_y, flow_x, cell(, ignore)].

    Everything up to the flows is deterministic, so a CacheDataset computes the flows once per image;
    the random spatial steps then move image, labels and flows together (flow-aware flips/rotations).
    The paper's contrast range is gamma in [0, 2] and the reference code's [1, 2]; gamma near 0 maps
    every pixel to the same value, so the default is [0.5, 2]. `boundary_exclusion` (pretraining and
    replayed public data only) runs on the whole image before the flows; with `ignore_key` the excluded
    pixels are also kept as a mask that MEDIARLoss leaves out.
    """
    img_key, label_key = keys
    chain = _load(keys, load) + _preprocess(img_key, percentiles, channel_wise)
    spatial_keys = [img_key, label_key]
    if boundary_exclusion:
        chain.append(BoundaryExclusiond(label_key, ignore_key=ignore_key))
        if ignore_key is not None:
            spatial_keys.append(ignore_key)
    chain += _flows(label_key, flow_key)
    chain += _spatial(spatial_keys, flow_key, roi_size, zoom)
    chain += _intensity(img_key, label_key, intensity_prob, contrast_gamma, cell_aware_prob)
    used_ignore = ignore_key if boundary_exclusion else None
    chain.append(Lambda(partial(stack_target, flow_key=flow_key, label_key=label_key, ignore_key=used_ignore,
                                target_key=target_key)))
    typed = [img_key, label_key, flow_key, target_key] + ([used_ignore] if used_ignore else [])
    return Compose(chain + [EnsureTyped(typed, track_meta=False)])


def mediar_valid_transforms(
    keys: Sequence[str] = ("image", "label"),
    load: bool = True,
    channel_wise: bool = True,
    percentiles: tuple[float, float] = (0.0, 99.5),
) -> Compose:
    """MEDIAR validation chain: preprocessing only (whole image, no augmentation), int32 instance labels."""
    img_key, label_key = keys
    chain = _load(keys, load) + _preprocess(img_key, percentiles, channel_wise)
    return Compose(chain + [CastToTyped(label_key, dtype=np.int32), EnsureTyped(keys, track_meta=False)])


def mediar_predict_transforms(
    image_key: str = "image", load: bool = True, channel_wise: bool = True,
    percentiles: tuple[float, float] = (0.0, 99.5), raw_key: str | None = None,
) -> Compose:
    """MEDIAR inference preprocessing: read (or take a (C, H, W) array), 3 channels, percentile scaling.

    With `raw_key`, the image as read is kept under that key too (cells are measured on raw intensities).
    """
    keep_raw = [CopyItemsd(image_key, names=raw_key)] if raw_key else []
    chain = _load([image_key], load) + keep_raw + _preprocess(image_key, percentiles, channel_wise)
    return Compose(chain + [EnsureTyped(image_key, track_meta=False)])
