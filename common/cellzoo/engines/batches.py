"""Batch preparation for MONAI engines when the training target is not stored under "label"."""

from __future__ import annotations

import torch


class PrepareImageTarget:
    """`prepare_batch` for MONAI engines: returns (batch[image_key], batch[target_key]) on the device.

    MONAI's default reads "image" and "label"; MEDIAR-style training keeps the instance labels under
    "label" and learns from a separate stacked target (flows + foreground), so the key is configurable.
    """

    def __init__(self, image_key: str = "image", target_key: str = "target"):
        self.image_key, self.target_key = image_key, target_key

    def __call__(self, batch: dict, device=None, non_blocking: bool = False, **kwargs):
        """Move the image and target of a collated batch to `device`."""
        image = batch[self.image_key].to(device=device, non_blocking=non_blocking, **kwargs)
        target = batch[self.target_key].to(device=device, non_blocking=non_blocking, **kwargs)
        return torch.as_tensor(image), torch.as_tensor(target)
