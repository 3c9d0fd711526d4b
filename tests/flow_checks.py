"""Flow checks shared by the flow tests and scripts/benchmark_flows.py: agreement between two flow fields
(cellzoo's targets and a reference implementation's) and network-like perturbations of exact maps."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def mean_flow_cosine(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean cosine similarity of (2, H, W) flow vectors over `mask`; two zero vectors agree (1), one gives 0."""
    a, b = a[:, mask].astype(np.float64), b[:, mask].astype(np.float64)
    na, nb = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    cos = (a * b).sum(0) / np.where(na * nb > 0, na * nb, 1.0)
    cos[(na == 0) & (nb == 0)] = 1.0
    return float(cos.mean())


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float = 2.0) -> np.ndarray:
    """Unit-variance Gaussian noise smoothed over `sigma` px, like the errors of a network's output."""
    noise = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    return (noise / noise.std()).astype(np.float32)


def perturb_flow_maps(flows: np.ndarray, logits: np.ndarray, seed: int, flow_sd: float = 1.5,
                      logit_sd: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(2, H, W) flows (at the network's 5x scale) and (H, W) logits with smooth noise; logits also blurred."""
    rng = np.random.default_rng(seed)
    shape = flows.shape[1:]
    noisy_flows = flows + flow_sd * np.stack([_smooth_noise(rng, shape), _smooth_noise(rng, shape)])
    noisy_logits = ndi.gaussian_filter(logits, 1.0) + logit_sd * _smooth_noise(rng, logits.shape)
    return noisy_flows.astype(np.float32), noisy_logits.astype(np.float32)
