"""CUPre's detector as one tensor in, one tensor out, for model formats that need that (bioimage.io).

The detector returns a data-dependent number of instances per image (boxes, scores, box-relative masks);
`InstanceLabelNetwork` paints them into one instance label image per input image, as inference writes its
label TIFFs (`detections_to_labels`: the more confident instance wins where masks overlap).
"""

from __future__ import annotations

import torch
from torch import nn

from cellzoo.methods.cupre.masks import detections_to_labels
from cellzoo.methods.cupre.network import cascade_mask_rcnn

__all__ = ["InstanceLabelNetwork"]


class InstanceLabelNetwork(nn.Module):
    """(B, 3, H, W) images in [0, 1] -> (B, 1, H, W) float32 instance labels (0 background, 1..N by score).

    `detector_kwargs` build the detector (`cascade_mask_rcnn`); its weights are this module's `detector.*`.
    Only detections scoring at least `score_threshold` are painted.
    """

    def __init__(self, detector_kwargs: dict | None = None, score_threshold: float = 0.5, mask_threshold: float = 0.5,
                 min_size: int = 0):
        super().__init__()
        self.detector = cascade_mask_rcnn(**dict(detector_kwargs or {}))
        self.score_threshold, self.mask_threshold, self.min_size = float(score_threshold), float(mask_threshold), int(min_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.detector.eval()  # the detector's training mode needs targets
        with torch.no_grad():
            detections = self.detector(list(images))
        labels = []
        for image, found in zip(images, detections):
            keep = found["scores"] >= self.score_threshold
            painted, _ = detections_to_labels({k: v[keep] for k, v in found.items()}, tuple(image.shape[-2:]),
                                              self.mask_threshold, self.min_size)
            labels.append(torch.from_numpy(painted).to(torch.float32)[None])
        return torch.stack(labels).to(images.device)
