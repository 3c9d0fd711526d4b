"""Spatial augmentation that keeps precomputed flow fields consistent with the image and labels.

Flows are computed once per image (cacheable) and then flipped, rotated and zoomed together with the
image: a flip negates the flow component along the flipped axis, a 90-degree rotation turns the vectors,
and interpolation (zoom) is followed by renormalisation to unit length inside cells. MONAI's spatial
transforms move pixels but know nothing of vector fields, so these few steps are written here.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.transforms import MapTransform, RandomizableTransform


def flip_flows(flows: np.ndarray, spatial_axis: int) -> np.ndarray:
    """Flip a (2, H, W) flow field along spatial axis 0 (y) or 1 (x), negating that component."""
    out = np.flip(flows, axis=1 + spatial_axis).copy()
    out[spatial_axis] *= -1
    return out


def rot90_flows(flows: np.ndarray, k: int) -> np.ndarray:
    """Rotate a (2, H, W) flow field like np.rot90(..., k, axes=(1, 2)) and turn its vectors with it."""
    out = np.rot90(flows, k, axes=(1, 2)).copy()
    fy, fx = out[0].copy(), out[1].copy()
    # np.rot90 maps a displacement (dy, dx) to (-dx, dy) per quarter turn.
    for _ in range(k % 4):
        fy, fx = -fx, fy
    out[0], out[1] = fy, fx
    return out


def normalize_flows(flows: np.ndarray, labels: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Unit-length flows inside labelled pixels, zero outside (after interpolation blurred them)."""
    flows = np.asarray(flows, dtype=np.float32)
    norm = np.sqrt((flows**2).sum(axis=0, keepdims=True))
    inside = np.asarray(labels).reshape(norm.shape) > 0
    return np.where(inside & (norm > eps), flows / np.maximum(norm, eps), 0.0).astype(np.float32)


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


class _RandFlowSpatiald(RandomizableTransform, MapTransform):
    """With probability `prob`, apply one random spatial operation to `keys` and the matching one to the flows."""

    def __init__(self, keys: Sequence[Hashable], flow_key: str = "flows", prob: float = 0.5):
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys)
        self.flow_key = flow_key

    def _apply(self, array: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _apply_flows(self, flows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            d[key] = self._apply(_as_numpy(d[key]))
        d[self.flow_key] = self._apply_flows(_as_numpy(d[self.flow_key]))
        return d


class RandFlowFlipd(_RandFlowSpatiald):
    """With probability `prob`, flip `keys` and the flow field along a random spatial axis."""

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self._axis = int(self.R.randint(2))

    def _apply(self, array: np.ndarray) -> np.ndarray:
        return np.flip(array, axis=1 + self._axis).copy()

    def _apply_flows(self, flows: np.ndarray) -> np.ndarray:
        return flip_flows(flows, self._axis)


class RandFlowRotate90d(_RandFlowSpatiald):
    """With probability `prob`, rotate `keys` and the flow field by k * 90 degrees, k in {1, 2, 3}."""

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self._k = int(self.R.randint(1, 4))

    def _apply(self, array: np.ndarray) -> np.ndarray:
        return np.rot90(array, self._k, axes=(1, 2)).copy()

    def _apply_flows(self, flows: np.ndarray) -> np.ndarray:
        return rot90_flows(flows, self._k)


class NormalizeFlowsd(MapTransform):
    """Renormalise `flow_key` to unit vectors inside `label_key` cells, zero elsewhere."""

    def __init__(self, flow_key: str = "flows", label_key: str = "label"):
        super().__init__([flow_key])
        self.flow_key, self.label_key = flow_key, label_key

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        d[self.flow_key] = normalize_flows(_as_numpy(d[self.flow_key]), _as_numpy(d[self.label_key]))
        return d
