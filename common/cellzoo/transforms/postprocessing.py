"""MONAI dictionary transforms that turn network maps into instances inside engines (validation)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from cellzoo.postprocess.flows import flows_to_instances


class FlowsToInstancesd(MapTransform):
    """Replace (3, H, W) [flow_y, flow_x, cellprob logit] maps by (1, H, W) int32 instance labels.

    Keyword arguments go to `flows_to_instances` (thresholds, flow_scale, niter, min_size ...).
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **postprocess_args):
        super().__init__(keys, allow_missing_keys)
        self.postprocess_args = postprocess_args

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            maps = torch.as_tensor(d[key]).detach()
            labels = flows_to_instances(maps[:2], maps[2], device=maps.device, **self.postprocess_args)
            d[key] = torch.from_numpy(labels)[None]
        return d
