"""Cell-aware intensity diversification (MEDIAR sec. 4.1, Table 1: "Cell-Aware Intensity")."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_to_dst_type, convert_to_numpy

__all__ = ["CellAwareIntensityd", "cell_factor_map"]


def cell_factor_map(label: np.ndarray, cell_ids: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Float32 map equal to factors[i] on pixels of cell_ids[i] and 1 elsewhere (background included)."""
    out = np.ones(label.shape, dtype=np.float32)
    if len(cell_ids) == 0:
        return out
    order = np.argsort(cell_ids)
    ids, facs = cell_ids[order], factors[order]
    # searchsorted is a vectorised lookup that works for sparse, non-consecutive label ids.
    pos = np.clip(np.searchsorted(ids, label), 0, len(ids) - 1)
    hit = ids[pos] == label
    out[hit] = facs[pos[hit]]
    return out


class CellAwareIntensityd(RandomizableTransform, MapTransform):
    """Multiply the intensity of a random fraction of labelled cells by one U(scale_range) factor per cell.

    MONAI has no per-instance intensity transform, so this is written by hand. The reference code
    (Lee-Gihun/MEDIAR, CellAware.py) draws one shared factor for all chosen cells and applies the
    transform always; the paper (Table 1) says "the intensity scale of each cell" with p = 0.25, which
    is the default here (``per_cell=False`` gives the reference's shared factor). The reference changes
    floor(n_cells * cell_fraction) cells, which is 0 for crops with one or two cells; here the count is
    stochastically rounded, so on average exactly `cell_fraction` of the cells change.
    """

    backend = ["torch", "numpy"]

    def __init__(
        self,
        keys: KeysCollection = ("img",),
        label_key: str = "label",
        prob: float = 0.25,
        cell_fraction: float = 0.4,
        scale_range: tuple[float, float] = (1.0, 1.7),
        per_cell: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if not 0.0 <= cell_fraction <= 1.0:
            raise ValueError(f"cell_fraction must be in [0, 1], got {cell_fraction}")
        if scale_range[0] > scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with low <= high, got {scale_range}")
        self.label_key = label_key
        self.cell_fraction = cell_fraction
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.per_cell = per_cell
        self._cells = np.zeros(0, dtype=np.int64)
        self._factors = np.zeros(0, dtype=np.float32)

    def randomize(self, cell_ids: np.ndarray) -> None:
        """Decide whether to act, then pick the cells and their factors."""
        super().randomize(None)
        if not self._do_transform:
            return
        # Stochastic rounding keeps the expected fraction exact even for crops with few cells.
        n_change = int(np.floor(len(cell_ids) * self.cell_fraction + self.R.uniform()))
        self._cells = self.R.choice(cell_ids, size=n_change, replace=False) if n_change else cell_ids[:0]
        n_factors = n_change if self.per_cell else 1
        factors = self.R.uniform(*self.scale_range, size=n_factors).astype(np.float32)
        self._factors = factors if self.per_cell else np.repeat(factors, n_change)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        """Apply to every key in `keys`, using the instance labels under `label_key`."""
        d = dict(data)
        label = convert_to_numpy(d[self.label_key])
        label = label[0] if label.ndim == 3 else label  # (1, H, W) channel-first labels
        cell_ids = np.unique(label)
        self.randomize(cell_ids[cell_ids > 0].astype(np.int64))
        if not self._do_transform or len(self._cells) == 0:
            return d
        factor = cell_factor_map(label, self._cells, self._factors)[None]  # broadcast over channels
        for key in self.key_iterator(d):
            img = d[key]
            d[key] = img * convert_to_dst_type(factor, img, dtype=factor.dtype)[0]
        return d

    @property
    def chosen(self) -> Sequence[int]:
        """Cell ids changed by the last call (empty if it did nothing)."""
        return [int(c) for c in self._cells] if self._do_transform else []
