"""MEDIAR modality discovery (sec. 4.3): k-means on pooled encoder embeddings of the training images."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from scipy.cluster.vq import kmeans2
from torch import nn

__all__ = ["discover_modalities", "encoder_embeddings"]

logger = logging.getLogger(__name__)


def discover_modalities(
    embeddings: np.ndarray, k: int = 40, seed: int = 0, n_iter: int = 100, n_init: int = 4
) -> np.ndarray:
    """Cluster (N, D) embeddings into min(k, N) modalities; return (N,) int64 cluster ids.

    scipy's kmeans2 (k-means++ start) runs `n_init` times with different seeds and the run with the
    lowest within-cluster sum of squares is kept; kmeans2 has no restarts of its own.
    """
    data = np.asarray(embeddings, dtype=np.float64)
    if data.ndim != 2 or len(data) == 0:
        raise ValueError(f"embeddings must be a non-empty (N, D) array, got shape {data.shape}")
    asked, k = int(k), max(1, min(int(k), len(data)))
    best, best_inertia = None, np.inf
    for run in range(n_init):
        centroids, labels = kmeans2(data, k, iter=n_iter, minit="++", seed=np.random.default_rng([seed, run]))
        inertia = float(((data - centroids[labels]) ** 2).sum())
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    best = np.asarray(best, dtype=np.int64)
    sizes = np.bincount(best, minlength=k)
    # plain ints: napari's pytest plugin turns numpy scalars in log arguments into strings, which %d refuses
    logger.info("modality discovery: %d images in %d modalities (k = %d asked; images per modality: min %d, "
                "median %d, max %d; %d empty)", len(data), int((sizes > 0).sum()), asked, int(sizes.min()),
                int(np.median(sizes)), int(sizes.max()), int((sizes == 0).sum()))
    return best


def _deepest(features: torch.Tensor | list | tuple) -> torch.Tensor:
    """The last (deepest) feature map of an encoder output (smp encoders return a list)."""
    return features[-1] if isinstance(features, (list, tuple)) else features


@torch.no_grad()
def encoder_embeddings(
    encoder: nn.Module,
    images: Iterable[torch.Tensor | Mapping[str, torch.Tensor]],
    device: str | torch.device = "cpu",
    key: str = "img",
) -> np.ndarray:
    """(N, C) global-average-pooled deepest features of (B, C, H, W) / (C, H, W) images (or batch dicts' `key`).

    The encoder must already be on `device`; it runs in eval mode and its previous mode is restored.
    """
    was_training = encoder.training
    encoder.eval()
    out = []
    try:
        for x in images:
            x = torch.as_tensor(x[key] if isinstance(x, Mapping) else x)
            x = (x[None] if x.ndim == 3 else x).to(device=device, dtype=torch.float32)
            out.append(_deepest(encoder(x)).mean(dim=(-2, -1)).float().cpu())
    finally:
        encoder.train(was_training)
    if not out:
        raise ValueError("encoder_embeddings got no images")
    return torch.cat(out).numpy()
