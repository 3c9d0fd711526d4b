"""Detections (boxes, scores, labels, box-relative mask probabilities) -> pixel masks, label images, COCO results.

The detector predicts each mask as an M x M probability map inside its box. Pasting all of them into
full-size images, as torchvision does, costs N x H x W floats (2000 cells on a 2048-px field: 32 GB), so
here each mask is pasted into its own box only (`paste_masks`) and whole-image products are built one
instance at a time.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from skimage.segmentation import relabel_sequential
from torch import Tensor
from torchvision.models.detection.roi_heads import expand_boxes, expand_masks

__all__ = ["Instance", "detections_to_coco", "detections_to_labels", "empty_detections", "paste_masks"]

Instance = tuple[int, int, np.ndarray]  # (y0, x0, boolean mask of the box region)


def empty_detections(mask_size: int = 28) -> dict[str, Tensor]:
    """A detection dict without any instance."""
    return {"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64),
            "mask_probs": torch.zeros((0, 1, mask_size, mask_size))}


def paste_masks(mask_probs: Tensor, boxes: Tensor, shape: tuple[int, int], threshold: float = 0.5) -> list[Instance]:
    """Each (1, M, M) mask probability map resized into its box and thresholded, clipped to `shape`.

    As in Mask R-CNN, the map is padded by one pixel and the box enlarged by the same factor first, so the
    bilinear resize does not cut the mask's border; the box spans its integer corners inclusively.
    """
    if len(boxes) == 0:
        return []
    padded, scale = expand_masks(mask_probs.float().cpu(), padding=1)
    boxes = expand_boxes(boxes.float().cpu(), scale).to(torch.int64)
    height, width = shape
    out = []
    for prob, (x0, y0, x1, y1) in zip(padded, boxes.tolist()):
        w, h = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
        resized = F.interpolate(prob[None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        cy0, cx0 = max(y0, 0), max(x0, 0)
        cy1, cx1 = min(y0 + h, height), min(x0 + w, width)
        if cy1 <= cy0 or cx1 <= cx0:
            out.append((0, 0, np.zeros((0, 0), dtype=bool)))
            continue
        crop = resized[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] >= threshold
        out.append((cy0, cx0, crop.numpy()))
    return out


def detections_to_labels(detections: dict, shape: tuple[int, int], threshold: float = 0.5, min_size: int = 0,
                         ) -> tuple[np.ndarray, dict[int, float]]:
    """An instance label image (int32) and {label: score}: masks painted from the lowest score up, so where
    masks overlap the more confident one wins; instances left with fewer than `min_size` pixels are dropped
    and labels numbered 1..N in order of decreasing score."""
    height, width = shape
    canvas = np.zeros((height, width), dtype=np.int32)
    scores = detections["scores"].detach().cpu().numpy()
    order = np.argsort(-scores, kind="stable")  # order[r] = the detection of rank r (0 = best)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    instances = paste_masks(detections["mask_probs"], detections["boxes"], shape, threshold)
    for index in order[::-1]:
        y0, x0, crop = instances[index]
        canvas[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]][crop] = rank[index] + 1
    if min_size > 0 and canvas.any():
        counts = np.bincount(canvas.ravel())
        canvas[counts[canvas] < min_size] = 0
    labels, forward, _ = relabel_sequential(canvas)
    kept = {int(forward[v]): float(scores[order[v - 1]]) for v in np.unique(canvas) if v > 0}
    return labels.astype(np.int32), kept


def detections_to_coco(detections: dict, shape: tuple[int, int], image_id: int, threshold: float = 0.5,
                       category_ids: list[int] | None = None) -> list[dict]:
    """COCO result records (RLE mask, detector box [x, y, w, h], area, score), one per detection.

    Masks keep their overlaps, as Mask R-CNN evaluations (LIVECell's included) score them. `category_ids`
    maps the detector's class index k (1..K) to a COCO category id (default: k itself).
    """
    from pycocotools import mask as mask_utils

    height, width = shape
    canvas = np.zeros((height, width), dtype=np.uint8, order="F")  # one reusable Fortran canvas for encode()
    boxes = detections["boxes"].detach().cpu().tolist()
    scores = detections["scores"].detach().cpu().tolist()
    labels = detections["labels"].detach().cpu().tolist()
    records = []
    for (y0, x0, crop), box, score, label in zip(paste_masks(detections["mask_probs"], detections["boxes"], shape,
                                                             threshold), boxes, scores, labels):
        canvas[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
        rle = mask_utils.encode(canvas)
        canvas[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = 0
        category = category_ids[int(label) - 1] if category_ids else int(label)
        records.append({"image_id": int(image_id), "category_id": int(category),
                        "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
                        "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "area": float(crop.sum()),
                        "score": float(score)})
    return records
