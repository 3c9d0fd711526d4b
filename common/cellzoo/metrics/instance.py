"""Instance-segmentation metrics on integer label images (0 = background): IoU, matching, F1, AP."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.segmentation import relabel_sequential

from cellzoo.errors import InputError
from cellzoo.io.validate import check_label_image

logger = logging.getLogger(__name__)

DEFAULT_AP_THRESHOLDS = np.round(np.arange(0.5, 1.0, 0.05), 2)


def threshold_key(threshold: float) -> str:
    """Dictionary key used for an IoU threshold, e.g. 0.5 -> "0.50"."""
    return f"{threshold:.2f}"


def check_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """`labels` as a non-negative integer array (whole-number floats accepted), else InputError."""
    return check_label_image(labels, name, ndim=None, allow_empty=True, allow_float=True)


def _check_pair(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gt, pred = check_labels(gt, "gt"), check_labels(pred, "pred")
    if gt.shape != pred.shape:
        raise InputError(f"gt shape {gt.shape} differs from pred shape {pred.shape}")
    if gt.ndim not in (2, 3):
        raise InputError(f"expected 2D or 3D label images, got {gt.ndim}D")
    return gt, pred


def _check_threshold(threshold: float) -> float:
    if not 0.0 <= float(threshold) <= 1.0:
        raise InputError(f"IoU threshold must lie in [0, 1], got {threshold}")
    # np.arange thresholds carry float noise (0.9500000000000002); round so an IoU of exactly 0.95 counts.
    return round(float(threshold), 6)


def sequential_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels renumbered 1..n keeping their order, the n original ids in ascending order)."""
    seq, _, inverse = relabel_sequential(labels)
    new, old = np.asarray(inverse.in_values), np.asarray(inverse.out_values)
    # The inverse map lists 0 only when background is present, so select by new label, not position.
    keep = new > 0
    return seq, old[keep][np.argsort(new[keep])].astype(np.int64)


class _Overlaps:
    """Sparse overlap table of two label images: only pairs that share pixels are stored."""

    def __init__(self, gt: np.ndarray, pred: np.ndarray):
        # Relabel to 1..n so that huge or sparse ids cost nothing; keep the maps back to original ids.
        g, self.gt_ids = sequential_labels(gt.ravel())
        p, self.pred_ids = sequential_labels(pred.ravel())
        n_gt, n_pred = len(self.gt_ids), len(self.pred_ids)
        gt_sizes = np.bincount(g, minlength=n_gt + 1)[1:]
        pred_sizes = np.bincount(p, minlength=n_pred + 1)[1:]
        both = (g > 0) & (p > 0)
        # coo -> csr sums the duplicate (gt, pred) entries: one entry per overlapping pair.
        table = coo_matrix(
            (np.ones(int(both.sum()), dtype=np.int64), (g[both] - 1, p[both] - 1)),
            shape=(n_gt, n_pred),
        ).tocsr().tocoo()
        self.rows, self.cols = table.row, table.col
        inter = table.data.astype(np.float64)
        self.iou = inter / (gt_sizes[self.rows] + pred_sizes[self.cols] - inter)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.gt_ids), len(self.pred_ids)

    def dense(self) -> np.ndarray:
        out = np.zeros(self.shape, dtype=np.float64)
        out[self.rows, self.cols] = self.iou
        return out


def iou_matrix(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every gt instance (rows, ascending id) with every predicted instance (columns, ascending id)."""
    gt, pred = _check_pair(gt, pred)
    return _Overlaps(gt, pred).dense()


def _match_component(rows: np.ndarray, cols: np.ndarray, iou: np.ndarray) -> list[tuple[int, int]]:
    """Optimal matching inside one connected group of candidate pairs."""
    if len(rows) == 1:
        return [(int(rows[0]), int(cols[0]))]
    r_idx, r = np.unique(rows, return_inverse=True)
    c_idx, c = np.unique(cols, return_inverse=True)
    # Maximise the number of matches first, then the summed IoU (the bonus is < 1 in total).
    score = np.zeros((len(r_idx), len(c_idx)))
    score[r, c] = 1.0 + iou / (2.0 * min(len(r_idx), len(c_idx)))
    sel_r, sel_c = linear_sum_assignment(score, maximize=True)
    keep = score[sel_r, sel_c] > 0
    return [(int(r_idx[i]), int(c_idx[j])) for i, j in zip(sel_r[keep], sel_c[keep])]


def _match(ov: _Overlaps, threshold: float) -> list[tuple[int, int]]:
    """Index pairs (gt row, pred column) of the optimal one-to-one matching at `threshold`."""
    ok = ov.iou >= threshold
    rows, cols, iou = ov.rows[ok], ov.cols[ok], ov.iou[ok]
    if len(rows) == 0:
        return []
    n_gt, n_pred = ov.shape
    # Solve each connected group of candidate pairs on its own: thousands of cells give
    # thousands of tiny problems instead of one huge dense assignment.
    graph = coo_matrix((np.ones(len(rows)), (rows, cols + n_gt)), shape=(n_gt + n_pred,) * 2)
    _, comp = connected_components(graph, directed=False)
    edge_comp = comp[rows]
    order = np.argsort(edge_comp, kind="stable")
    splits = np.flatnonzero(np.diff(edge_comp[order])) + 1
    pairs: list[tuple[int, int]] = []
    for group in np.split(order, splits):
        pairs.extend(_match_component(rows[group], cols[group], iou[group]))
    return sorted(pairs)


def _counts(ov: _Overlaps, threshold: float) -> tuple[int, int, int, list[tuple[int, int]]]:
    idx = _match(ov, threshold)
    pairs = [(int(ov.gt_ids[i]), int(ov.pred_ids[j])) for i, j in idx]
    tp = len(pairs)
    n_gt, n_pred = ov.shape
    return tp, n_pred - tp, n_gt - tp, pairs


def match_instances(
    gt: np.ndarray, pred: np.ndarray, iou_threshold: float = 0.5
) -> tuple[int, int, int, list[tuple[int, int]]]:
    """Optimal one-to-one matching; returns (tp, fp, fn, [(gt_id, pred_id), ...]) sorted by gt id."""
    gt, pred = _check_pair(gt, pred)
    return _counts(_Overlaps(gt, pred), _check_threshold(iou_threshold))


def remove_border_cells(labels: np.ndarray, margin: int = 2) -> np.ndarray:
    """Copy of `labels` with every instance that has a pixel within `margin` px of the border set to 0."""
    # Written by hand: skimage.segmentation.clear_border re-labels connected components, so an
    # instance split into several pieces would only lose the piece touching the border.
    out = check_labels(labels).copy()
    if margin <= 0 or out.size == 0:
        return out
    inner = tuple(slice(margin, max(margin, n - margin)) for n in out.shape)
    strip = np.ones(out.shape, dtype=bool)
    strip[inner] = False
    touching = np.unique(out[strip])
    out[np.isin(out, touching[touching > 0])] = 0
    return out


def _ratio(num: float, den: float, both_empty: bool) -> float:
    if den > 0:
        return num / den
    return 1.0 if both_empty else 0.0


def scores_from_counts(tp: int, fp: int, fn: int) -> dict:
    """precision, recall, f1 and AP=tp/(tp+fp+fn) from counts; 1.0 when gt and pred are both empty."""
    empty = tp + fp + fn == 0
    return {
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
        "precision": _ratio(tp, tp + fp, empty),
        "recall": _ratio(tp, tp + fn, empty),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, empty),
        "ap": _ratio(tp, tp + fp + fn, empty),
    }


def instance_scores(
    gt: np.ndarray,
    pred: np.ndarray,
    iou_thresholds: Sequence[float] = (0.5,),
    border_margin: int = 0,
) -> dict:
    """Per-image counts and scores: {"n_gt", "n_pred", "thresholds": {"0.50": {tp, fp, fn, precision, recall, f1, ap}}}."""
    gt, pred = _check_pair(gt, pred)
    if border_margin > 0:
        gt, pred = remove_border_cells(gt, border_margin), remove_border_cells(pred, border_margin)
    ov = _Overlaps(gt, pred)
    per_threshold = {}
    for t in iou_thresholds:
        tp, fp, fn, _ = _counts(ov, _check_threshold(t))
        per_threshold[threshold_key(t)] = scores_from_counts(tp, fp, fn)
    return {"n_gt": ov.shape[0], "n_pred": ov.shape[1], "thresholds": per_threshold}


def average_precision(
    gt: np.ndarray, pred: np.ndarray, iou_thresholds: Sequence[float] = DEFAULT_AP_THRESHOLDS
) -> np.ndarray:
    """StarDist/Cellpose AP = tp / (tp + fp + fn) at each IoU threshold (1.0 if both images are empty)."""
    res = instance_scores(gt, pred, iou_thresholds)["thresholds"]
    return np.array([res[threshold_key(t)]["ap"] for t in iou_thresholds], dtype=np.float64)


def evaluate_instances(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    iou: float = 0.5,
    border_margin: int = 0,
    ap_thresholds: Sequence[float] = DEFAULT_AP_THRESHOLDS,
) -> dict:
    """Aggregate over (gt, pred) pairs: mean per-image f1/precision/recall at `iou`, mean AP per threshold, summed counts."""
    ap_thresholds = [_check_threshold(t) for t in ap_thresholds]
    iou = _check_threshold(iou)
    key = threshold_key(iou)
    thresholds = sorted(set(ap_thresholds) | {iou})
    results = [instance_scores(g, p, thresholds, border_margin) for g, p in pairs]
    if not results:
        raise InputError("evaluate_instances got no (gt, pred) pairs")
    n_gt = sum(result["n_gt"] for result in results)
    if border_margin > 0 and n_gt == 0:
        # otherwise every image would score F1 = 1.0 (nothing to find, nothing found)
        raise InputError(f"every ground-truth cell lies within {border_margin} px of the image border: nothing is "
                         "left to score; lower the border margin")
    totals = {k: int(sum(result["thresholds"][key][k] for result in results)) for k in ("tp", "fp", "fn")}
    # an image with no ground-truth cell left to score (all on the border) would count as F1 1 or 0 by the
    # empty-image rule whatever the model did: it is reported and kept out of the means (its false
    # positives still count in the pooled F1); only when no image has a cell does the rule decide
    unscored = [i for i, result in enumerate(results) if result["n_gt"] == 0] if n_gt else []
    if unscored:
        logger.warning("%d of %d image(s) have no ground-truth cell to score (after the %d px border exclusion): "
                       "left out of the mean F1 and AP (images %s, in pair order)", len(unscored), len(results),
                       border_margin, ", ".join(map(str, unscored)))
    per_image = [result["thresholds"] for i, result in enumerate(results) if i not in unscored]
    at_iou = [img[key] for img in per_image]
    out = {k: float(np.mean([s[k] for s in at_iou])) for k in ("f1", "precision", "recall")}
    out["ap"] = {
        threshold_key(t): float(np.mean([img[threshold_key(t)]["ap"] for img in per_image]))
        for t in ap_thresholds
    }
    out["n_images"] = len(per_image)  # images scored
    out["unscored_images"] = unscored
    out["n_gt"] = int(n_gt)  # ground-truth cells scored (after the border exclusion)
    out.update(totals)
    out["f1_pooled"] = scores_from_counts(**totals)["f1"]
    return out
