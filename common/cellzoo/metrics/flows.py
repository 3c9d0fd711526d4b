"""Agreement between two flow fields (e.g. cellzoo's flow targets and a reference implementation's)."""

from __future__ import annotations

import numpy as np


def mean_flow_cosine(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean cosine similarity of (2, H, W) flow vectors over `mask`; two zero vectors agree (1), one gives 0."""
    a, b = a[:, mask].astype(np.float64), b[:, mask].astype(np.float64)
    na, nb = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    cos = (a * b).sum(0) / np.where(na * nb > 0, na * nb, 1.0)
    cos[(na == 0) & (nb == 0)] = 1.0
    return float(cos.mean())
