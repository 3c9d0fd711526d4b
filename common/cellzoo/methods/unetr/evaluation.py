"""The LightMyCells challenge metrics, per organelle, aggregated per modality and per focal offset.

As the challenge's evaluation code defines them: both images are percentile-normalised (2, 99.8; an image
whose two percentiles are equal is left as it is); nucleus and mitochondria are scored by MAE, SSIM,
Pearson correlation (PCC), Euclidean and cosine distance, tubulin and actin by SSIM and PCC. SSIM uses
skimage's default 7 x 7 window with data_range = the larger of the two images' ranges; an undefined PCC
(a constant image) counts as 0. PSNR (the paper's table metric, not a challenge metric) is added for every
organelle, on the same normalised images with the target's range. Results are averaged over images per
organelle, per transmitted-light modality and per focal offset |z - z_best|, as the challenge reports them.
The arithmetic is `cellzoo.metrics.image.image_metrics` on the normalised images.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Hashable, Mapping

import numpy as np
import torch

from cellzoo.metrics.image import image_metrics, percentile_normalize

__all__ = ["CHALLENGE_METRICS", "ChallengeScores", "challenge_metrics", "challenge_normalize", "summarise_scores"]

logger = logging.getLogger(__name__)

# metric names as in cellzoo.metrics.image; the challenge calls them MAE, SSIM, PCC, E_dist, C_dist
CHALLENGE_METRICS = {
    "Nucleus": ("mae", "ssim", "pcc", "euclidean", "cosine"),
    "Mitochondria": ("mae", "ssim", "pcc", "euclidean", "cosine"),
    "Tubulin": ("ssim", "pcc"),
    "Actin": ("ssim", "pcc"),
}
EXTRA_METRICS = ("psnr",)


def challenge_normalize(image: np.ndarray, low: float = 2.0, high: float = 99.8) -> np.ndarray:
    """(x - p_low) / (p_high - p_low) in float64; an image whose percentiles coincide is returned unchanged."""
    image = np.asarray(image, dtype=np.float64)
    p_low, p_high = np.percentile(image, [low, high])
    if p_low == p_high:
        return image
    return percentile_normalize(image, low, high, eps=0.0)


def challenge_metrics(pred: np.ndarray, target: np.ndarray, organelle: str) -> dict[str, float]:
    """The challenge's metrics for `organelle` (+ PSNR) between a predicted and a true 2D image."""
    if organelle not in CHALLENGE_METRICS:
        raise ValueError(f"organelle must be one of {tuple(CHALLENGE_METRICS)}, got {organelle!r}")
    pred_n, target_n = challenge_normalize(np.squeeze(pred)), challenge_normalize(np.squeeze(target))
    names = CHALLENGE_METRICS[organelle] + EXTRA_METRICS
    # the challenge's SSIM range covers both images; cellzoo's default (the target's range) serves the rest
    ssim_range = max(np.ptp(pred_n), np.ptp(target_n))
    scores = image_metrics(pred_n, target_n, normalize=False, names=[n for n in names if n != "ssim"])
    if "ssim" in names:
        scores["ssim"] = image_metrics(pred_n, target_n, normalize=False, data_range=ssim_range, names=("ssim",))["ssim"]
    if math.isnan(scores["pcc"]):
        scores["pcc"] = 0.0
    if "cosine" in scores:
        scores["cosine"] = abs(scores["cosine"])
    return {name: float(scores[name]) for name in names}


def summarise_scores(records: list[dict], organelle: str) -> dict:
    """Means over images: overall (flat keys, for studies), then per modality and per focal offset."""
    names = CHALLENGE_METRICS[organelle] + EXTRA_METRICS

    def mean(group: list[dict]) -> dict[str, float]:
        return {name: float(np.mean([r["scores"][name] for r in group])) for name in names}

    by_modality, by_offset = defaultdict(list), defaultdict(list)
    for record in records:
        by_modality[record["modality"]].append(record)
        by_offset[record["focal_offset"]].append(record)
    summary = {"organelle": organelle, "n_images": len(records), "n_items": len({r["item"] for r in records})}
    if not records:
        return summary
    summary.update(mean(records))
    summary["by_modality"] = {m: {"n_images": len(g), **mean(g)} for m, g in sorted(by_modality.items())}
    summary["by_focal_offset"] = {str(o): {"n_images": len(g), **mean(g)} for o, g in sorted(by_offset.items())}
    return summary


class ChallengeScores:
    """Ignite handler of an evaluator: the challenge metrics of every predicted image, and their summary.

    Runs after the engine's post-processing (so `pred` is the denormalised prediction) and reads the item,
    modality and focal offset that `plane_items` put into each batch entry. `summary()` gives what
    evaluate.yaml writes to metrics.json; the overall means also go to `engine.state.metrics`.
    """

    def __init__(self, organelle: str, pred_key: str = "pred", target_key: str = "label"):
        if organelle not in CHALLENGE_METRICS:
            raise ValueError(f"organelle must be one of {tuple(CHALLENGE_METRICS)}, got {organelle!r}")
        self.organelle, self.pred_key, self.target_key = organelle, pred_key, target_key
        self.records: list[dict] = []

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self.records.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.record)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.publish)

    def record(self, engine) -> None:
        """Score each image of the finished iteration."""
        for batch, output in zip(_items(engine.state.batch), _items(engine.state.output)):
            scores = challenge_metrics(_numpy(output[self.pred_key]), _numpy(output[self.target_key]), self.organelle)
            self.records.append({"name": str(batch["name"]), "item": str(batch["item"]),
                                 "modality": str(batch["modality"]), "focal_offset": int(batch["focal_offset"]),
                                 "scores": scores})
            logger.info("%s: %s", batch["name"], ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))

    def publish(self, engine) -> None:
        summary = self.summary()
        engine.state.metrics.update({k: v for k, v in summary.items() if isinstance(v, float)})

    def summary(self) -> dict:
        return summarise_scores(self.records, self.organelle)


def _items(batch) -> list[Mapping[Hashable, object]]:
    """Decollated engine data is a list of dicts; a single dict is one item."""
    return list(batch) if isinstance(batch, (list, tuple)) else [batch]


def _numpy(x) -> np.ndarray:
    return np.asarray(torch.as_tensor(x).detach().float().cpu())
