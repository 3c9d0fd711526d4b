"""ISL post-processing (sec. 2.3, Fig. 6): h-maxima seeds + watershed of the predicted distance map for cells,
connected components of the nucleus probability for nuclei, and their MONAI transform wrappers."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.measure import label
from skimage.morphology import local_maxima, reconstruction
from skimage.segmentation import watershed

from cellzoo.postprocess.instances import remove_small_instances
from cellzoo.postprocess.transforms import MapsToInstancesd

__all__ = ["DistanceToInstancesd", "ProbabilityToInstancesd", "distance_to_instances", "hmax_seeds",
           "nuclei_to_instances"]


def distance_to_instances(
    distance: np.ndarray,
    mask_prob: np.ndarray,
    h: float = 10.0,
    mask_threshold: float = 0.5,
    min_size: int = 16,
    seed_unseeded: bool = False,
) -> np.ndarray:
    """Int32 instance labels 1..n from a distance map and a foreground probability (same shape).

    Seeds are the regional maxima of HMAX_h(distance), the h-maxima transform (``hmax_seeds``) (paper: h = 10, in the
    distance map's units, i.e. pixels for ``labels_to_distance``), kept where mask_prob > mask_threshold.
    Each seed floods -distance inside that mask (skimage watershed). A peak less than h above its
    surroundings gives no seed, so with the paper's h a cell narrower than ~20 px is lost; pass a smaller
    h for small cells, or ``seed_unseeded=True`` to make every seedless mask component an instance of
    its own (our addition, not in the paper). Objects under ``min_size`` px are removed (the paper gives
    no size filter; 16 px is our default). ``mask_prob`` is a probability: apply a sigmoid to
    the cell network's mask logit first.
    """
    distance = np.asarray(distance, dtype=np.float64)
    mask = np.asarray(mask_prob) > mask_threshold
    if distance.shape != mask.shape:
        raise ValueError(f"distance {distance.shape} and mask {mask.shape} must have the same shape")
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.int32)
    markers = hmax_seeds(distance, h, mask)
    if seed_unseeded:
        markers = _seed_unseeded(markers, mask)
    labels = watershed(-distance, markers, mask=mask)
    return remove_small_instances(labels, min_size)


def hmax_seeds(distance: np.ndarray, h: float, mask: np.ndarray) -> np.ndarray:
    """Labelled regional maxima of HMAX_h(f) = R^delta_f(f - h), the reconstruction by dilation of f - h under f.

    This is the paper's definition (sec. 2.3). skimage.morphology.h_maxima is not used: it keeps only the
    pixels standing a full h above that reconstruction, so two equal peaks across a shallow saddle (the
    ridge of an elongated cell) give two seeds, where the regional maxima of HMAX form one plateau.
    """
    if h <= 0:
        raise ValueError(f"h must be > 0, got {h}")
    hmax = reconstruction(distance - h, distance, method="dilation")
    return label(local_maxima(hmax) & mask)


def _seed_unseeded(markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Add each connected component of `mask` that holds no marker as a marker of its own."""
    parts, n = ndi.label(mask)
    seeded = np.unique(parts[markers > 0])
    lonely = np.setdiff1d(np.arange(1, n + 1), seeded)
    extra = np.isin(parts, lonely)
    out = markers.copy()
    out[extra] = markers.max() + parts[extra]  # distinct ids above the existing markers
    return out


def nuclei_to_instances(
    prob: np.ndarray,
    threshold: float = 0.5,
    min_size: int = 16,
    split: bool = False,
    h: float = 2.0,
) -> np.ndarray:
    """Int32 nucleus instances from the nucleus model's probability map.

    The paper scores nuclei by semantic IoU only (sec. 3.1), so its pipeline needs no instances; this gives
    them for measurement. Default: 4-connected components of prob > threshold (4-connectivity so that
    nuclei touching at a corner stay apart). ``split=True`` also cuts touching nuclei by the same h-maxima
    watershed as cells, on the Euclidean distance transform of the thresholded mask (our addition).
    """
    mask = np.asarray(prob) > threshold
    if split:
        return distance_to_instances(ndi.distance_transform_edt(mask), mask, h=h, min_size=min_size)
    return remove_small_instances(label(mask, connectivity=1), min_size)


class DistanceToInstancesd(MapsToInstancesd):
    """(2, H, W) [distance, mask logit] maps (ISL cell model) -> instances.

    h-maxima seeds of the distance, watershed inside sigmoid(mask logit) > mask_threshold
    (`distance_to_instances`; keyword arguments go there).
    """

    def to_labels(self, maps: torch.Tensor) -> np.ndarray:
        maps = maps.float().cpu()
        return distance_to_instances(maps[0].numpy(), torch.sigmoid(maps[1]).numpy(), **self.postprocess_args)


class ProbabilityToInstancesd(MapsToInstancesd):
    """A (1, H, W) probability map (ISL nucleus model) -> instances (connected components).

    Keyword arguments go to `nuclei_to_instances` (threshold, min_size, split).
    """

    def to_labels(self, maps: torch.Tensor) -> np.ndarray:
        return nuclei_to_instances(maps.float().cpu()[0].numpy(), **self.postprocess_args)
