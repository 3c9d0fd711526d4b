"""Flip test-time augmentation: which flips to average and how to undo them on non-equivariant outputs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

#: Called as ``inverse(output, dims)`` on a (B, C, *spatial) output already flipped back along ``dims``.
FlipInverse = Callable[[Tensor, tuple[int, ...]], Tensor]


def flow_flip_inverse(flow_channels: Mapping[int, int] | None = None) -> FlipInverse:
    """Return a TTA inverse that negates the flow channel of each flipped spatial dim.

    ``flow_channels`` maps a spatial dim (counted from the end) to the output channel holding the flow
    component along it; the default ``{-1: 1, -2: 0}`` fits outputs ``[flow_y, flow_x, cellprob, ...]``
    (use ``{-1: 2, -2: 1, -3: 0}`` for 3D ``[flow_z, flow_y, flow_x, ...]``).
    """
    mapping = {-1: 1, -2: 0} if flow_channels is None else dict(flow_channels)
    if any(dim >= 0 for dim in mapping):
        raise ValueError(f"flow_channels keys must be negative spatial dims (-1 = W), got {sorted(mapping)}")

    def inverse(output: Tensor, dims: tuple[int, ...]) -> Tensor:
        # A flip along an axis mirrors the vector field, so its component along that axis changes sign.
        sign = torch.ones(output.shape[1], dtype=output.dtype, device=output.device)
        for dim in dims:
            if dim in mapping:
                sign[mapping[dim]] = -1.0
        return output * sign.view(1, -1, *([1] * (output.ndim - 2)))

    return inverse


@dataclass(frozen=True)
class FlipTTA:
    """Flip test-time augmentation: predict on flipped copies, flip back, apply `inverse`, average."""

    #: Each entry is a tuple of spatial dims counted from the end (-1 = W, -2 = H, -3 = D); () is identity.
    flips: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,))
    #: Fixes outputs that are not flip-equivariant (e.g. flow fields); see flow_flip_inverse.
    inverse: FlipInverse | None = None
