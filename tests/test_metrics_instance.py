"""Tests for cellzoo.metrics.instance against hand-computed cases and brute-force references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import find_objects
from skimage.segmentation import expand_labels, find_boundaries

from cellzoo.errors import InputError
from cellzoo.metrics import (
    average_precision,
    evaluate_instances,
    instance_scores,
    iou_matrix,
    match_instances,
    remove_border_cells,
)

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


def strips(*intervals: tuple[int, int, int], width: int = 30) -> np.ndarray:
    """3-row label image with label `lab` on columns [start, stop) for each (start, stop, lab)."""
    out = np.zeros((3, width), dtype=np.int32)
    for start, stop, lab in intervals:
        out[:, start:stop] = lab
    return out


# ---------------------------------------------------------------- hand-built cases


def test_iou_of_shifted_squares_matches_hand_value():
    gt = np.zeros((20, 20), np.uint16)
    pred = np.zeros((20, 20), np.uint16)
    gt[0:10, 0:10] = 1
    pred[0:10, 2:12] = 1  # shifted 2 px: overlap 10x8 = 80, union 10x12 = 120
    assert iou_matrix(gt, pred) == pytest.approx(np.array([[80 / 120]]))
    # shifted diagonally by (3, 4): overlap 7x6 = 42, union 200 - 42 = 158
    pred2 = np.zeros((20, 20), np.uint16)
    pred2[3:13, 4:14] = 5
    assert iou_matrix(gt, pred2)[0, 0] == pytest.approx(42 / 158)


def test_iou_matrix_rows_and_columns_follow_ascending_ids():
    gt = strips((0, 10, 9), (10, 20, 2))
    pred = strips((0, 5, 4), (12, 20, 70))
    # rows: gt 2, gt 9; columns: pred 4, pred 70
    expected = np.array([[0.0, 8 / 10], [5 / 10, 0.0]])
    np.testing.assert_allclose(iou_matrix(gt, pred), expected)


def test_tp_fp_fn_known_case():
    # gt 1 matched well, gt 2 matched poorly (IoU 4/16 = 0.25), gt 3 missed, pred 40 spurious
    gt = strips((0, 10, 1), (12, 20, 2), (22, 25, 3))
    pred = strips((0, 9, 10), (16, 24, 20), (27, 30, 40))
    tp, fp, fn, pairs = match_instances(gt, pred, 0.5)
    assert (tp, fp, fn) == (1, 2, 2)
    assert pairs == [(1, 10)]
    tp, fp, fn, pairs = match_instances(gt, pred, 0.2)
    assert (tp, fp, fn) == (2, 1, 1)
    assert pairs == [(1, 10), (2, 20)]


def test_hungarian_beats_greedy_at_low_threshold():
    # IoU(A,X) = 7/15, IoU(A,Y) = 3/10, IoU(B,X) = 5/17. Greedy takes A-X first and ends with 1 match;
    # the optimal matching pairs A-Y and B-X for 2 matches at threshold 0.25.
    gt = strips((0, 10, 1), (10, 20, 2))
    pred = strips((0, 3, 8), (3, 15, 7))
    np.testing.assert_allclose(iou_matrix(gt, pred), [[7 / 15, 3 / 10], [5 / 17, 0]])  # columns: 7, 8
    tp, fp, fn, pairs = match_instances(gt, pred, 0.25)
    assert (tp, fp, fn) == (2, 0, 0)
    assert pairs == [(1, 8), (2, 7)]
    # above 5/17 only A-X remains
    assert match_instances(gt, pred, 0.4)[:3] == (1, 1, 1)


def test_exact_half_iou_tie_gives_one_match():
    # a gt cell split exactly in half: both halves have IoU 0.5, only one may be matched
    gt = strips((0, 10, 1))
    pred = strips((0, 5, 1), (5, 10, 2))
    tp, fp, fn, pairs = match_instances(gt, pred, 0.5)
    assert (tp, fp, fn) == (1, 1, 0)
    assert pairs[0][0] == 1


def test_remove_border_cells_uses_margin_strip():
    lab = np.zeros((20, 20), np.int32)
    lab[0:3, 5:8] = 1  # touches the edge
    lab[1:4, 10:13] = 2  # 1 px from the edge -> inside a 2 px strip
    lab[2:5, 15:18] = 3  # first pixel at index 2 -> kept with margin 2
    lab[8:12, 8:12] = 4  # interior
    lab[8:10, 18:20] = 5  # touches the right edge
    lab[14:16, 5:7] = 5  # ... the same id elsewhere: the whole instance goes
    out = remove_border_cells(lab, margin=2)
    assert set(np.unique(out)) == {0, 3, 4}
    np.testing.assert_array_equal(out[lab == 3], 3)
    assert set(np.unique(remove_border_cells(lab, margin=1))) == {0, 2, 3, 4}
    assert set(np.unique(remove_border_cells(lab, margin=3))) == {0, 4}
    np.testing.assert_array_equal(remove_border_cells(lab, margin=0), lab)
    assert lab[0, 5] == 1  # input untouched


def test_border_margin_in_scores_ignores_edge_cells_on_both_sides():
    gt = np.zeros((30, 30), np.int32)
    pred = np.zeros((30, 30), np.int32)
    gt[10:20, 10:20] = 1
    pred[10:20, 10:20] = 1
    gt[0:5, 0:5] = 2  # edge cell missed by pred
    pred[25:30, 25:30] = 3  # edge false positive
    plain = instance_scores(gt, pred)["thresholds"]["0.50"]
    assert (plain["tp"], plain["fp"], plain["fn"]) == (1, 1, 1)
    res = instance_scores(gt, pred, border_margin=2)
    assert (res["n_gt"], res["n_pred"]) == (1, 1)
    assert res["thresholds"]["0.50"]["f1"] == 1.0


def test_empty_cases_conventions():
    empty = np.zeros((8, 8), np.uint8)
    one = empty.copy()
    one[2:5, 2:5] = 1
    both = instance_scores(empty, empty)["thresholds"]["0.50"]
    assert both == {"tp": 0, "fp": 0, "fn": 0, "precision": 1.0, "recall": 1.0, "f1": 1.0, "ap": 1.0}
    no_pred = instance_scores(one, empty)["thresholds"]["0.50"]
    assert (no_pred["fn"], no_pred["precision"], no_pred["recall"], no_pred["f1"]) == (1, 0.0, 0.0, 0.0)
    no_gt = instance_scores(empty, one)["thresholds"]["0.50"]
    assert (no_gt["fp"], no_gt["precision"], no_gt["recall"], no_gt["f1"]) == (1, 0.0, 0.0, 0.0)
    assert iou_matrix(empty, one).shape == (0, 1)
    np.testing.assert_array_equal(average_precision(empty, empty), np.ones(10))


def test_precision_recall_f1_formulas():
    # 4 gt, 3 pred, 2 matched: precision 2/3, recall 2/4, f1 4/7
    gt = strips((0, 4, 1), (5, 9, 2), (10, 14, 3), (15, 19, 4))
    pred = strips((0, 4, 1), (5, 9, 2), (25, 29, 3))
    s = instance_scores(gt, pred)["thresholds"]["0.50"]
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(0.5)
    assert s["f1"] == pytest.approx(4 / 7)
    assert s["ap"] == pytest.approx(2 / 5)


def test_average_precision_hand_computed():
    gt = np.zeros((40, 40), np.int32)
    pred = np.zeros((40, 40), np.int32)
    gt[0:10, 0:10] = 1
    pred[0:10, 0:9] = 1  # IoU 90/100
    gt[15:25, 0:10] = 2
    pred[15:25, 0:6] = 2  # IoU 60/100
    gt[30:35, 30:35] = 3  # missed
    pred[0:5, 30:35] = 3  # false positive
    ap = average_precision(gt, pred)
    # t <= 0.60: tp 2, fp 1, fn 1 -> 2/4; 0.65..0.90: tp 1 -> 1/5; 0.95: 0
    expected = [0.5] * 3 + [0.2] * 6 + [0.0]
    np.testing.assert_allclose(ap, expected)
    np.testing.assert_allclose(average_precision(gt, pred, np.arange(0.5, 1.0, 0.05)), expected)
    np.testing.assert_allclose(average_precision(gt, pred, [0.9]), [0.2])


def test_non_consecutive_ids_give_same_scores_and_report_original_ids():
    gt = strips((0, 10, 1), (12, 20, 2))
    pred = strips((0, 9, 1), (12, 19, 2))
    gt_big = np.where(gt == 1, 65000, np.where(gt == 2, 7, 0)).astype(np.uint16)
    pred_big = np.where(pred == 1, 300, np.where(pred == 2, 2**31 - 1, 0)).astype(np.int64)
    np.testing.assert_allclose(average_precision(gt, pred), average_precision(gt_big, pred_big))
    assert match_instances(gt_big, pred_big)[3] == [(7, 2**31 - 1), (65000, 300)]


def test_3d_labels():
    gt = np.zeros((20, 20, 20), np.uint16)
    pred = np.zeros((20, 20, 20), np.uint16)
    gt[0:10, 0:10, 0:10] = 1
    pred[2:12, 0:10, 0:10] = 1  # shifted 2 slices: 800 / 1200
    gt[12:16, 12:16, 12:16] = 2  # missed
    assert iou_matrix(gt, pred)[0, 0] == pytest.approx(2 / 3)
    assert match_instances(gt, pred, 0.6)[:3] == (1, 0, 1)
    assert match_instances(gt, pred, 0.7)[:3] == (0, 1, 2)
    # a cube touching z = 0 counts as a border cell in 3D too
    assert set(np.unique(remove_border_cells(gt, 2))) == {0, 2}


def test_bad_input_raises_input_error():
    a = np.zeros((5, 5), np.int32)
    with pytest.raises(InputError):
        iou_matrix(a, np.zeros((5, 6), np.int32))
    with pytest.raises(InputError):
        iou_matrix(a, np.full((5, 5), 0.5))
    with pytest.raises(InputError):
        iou_matrix(a, np.full((5, 5), np.nan))
    with pytest.raises(InputError):
        iou_matrix(a, -np.ones((5, 5), np.int32))
    with pytest.raises(InputError):
        match_instances(a, a, iou_threshold=1.5)
    with pytest.raises(InputError):
        evaluate_instances([])
    # float labels with whole-number values are accepted
    assert iou_matrix(a.astype(float) + 1, a + 1)[0, 0] == 1.0
    # no background at all: a single instance filling the image keeps its id
    assert match_instances(a + 5, a + 9)[3] == [(5, 9)]


# ---------------------------------------------------------------- brute-force references


def random_labels(rng: np.random.Generator, shape=(64, 64), n=25, max_id=1000) -> np.ndarray:
    """Random overlapping rectangles painted in turn; ids drawn without replacement, non-consecutive."""
    lab = np.zeros(shape, np.int32)
    ids = rng.choice(np.arange(1, max_id), size=n, replace=False)
    for i in ids:
        r, c = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
        h, w = rng.integers(3, 16, size=2)
        lab[r : r + h, c : c + w] = i
    return lab


def brute_iou(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    gids = [i for i in np.unique(gt) if i]
    pids = [j for j in np.unique(pred) if j]
    out = np.zeros((len(gids), len(pids)))
    for a, i in enumerate(gids):
        for b, j in enumerate(pids):
            g, p = gt == i, pred == j
            out[a, b] = (g & p).sum() / (g | p).sum()
    return out


def test_iou_matrix_matches_brute_force_on_random_labels():
    rng = np.random.default_rng(0)
    for _ in range(5):
        gt, pred = random_labels(rng), random_labels(rng)
        np.testing.assert_allclose(iou_matrix(gt, pred), brute_iou(gt, pred), rtol=0, atol=1e-12)


def test_matching_count_matches_exhaustive_search_on_small_random_cases():
    """Optimal number of matches vs trying every assignment on tiny images (low threshold)."""
    from itertools import permutations

    rng = np.random.default_rng(1)
    for _ in range(20):
        gt = random_labels(rng, (24, 24), n=5, max_id=50)
        pred = random_labels(rng, (24, 24), n=5, max_id=50)
        iou = brute_iou(gt, pred)
        ng, npr = iou.shape
        big, small = (iou, iou.T) if ng >= npr else (iou.T, iou)
        best = 0
        for perm in permutations(range(big.shape[0]), small.shape[0]):
            best = max(best, sum(small[k, perm[k]] >= 0.1 for k in range(small.shape[0])))
        assert match_instances(gt, pred, 0.1)[0] == best


def test_large_image_with_thousands_of_cells():
    n, step = 2000, 36
    yy, xx = np.mgrid[:n, :n]
    lab = ((yy // step) * 1000 + xx // step + 1).astype(np.int32)
    lab[(yy % step < 2) | (xx % step < 2)] = 0
    pred = np.zeros_like(lab)
    pred[:, 3:] = lab[:, :-3]  # 3 px shift: full cells IoU 31/37 = 0.838, edge column 15/18 = 0.833
    n_cells = len(np.unique(lab)) - 1
    assert n_cells > 3000
    res = evaluate_instances([(lab, pred)], iou=0.8, ap_thresholds=[0.5, 0.85])
    assert (res["tp"], res["fp"], res["fn"]) == (n_cells, 0, 0)
    assert res["ap"] == {"0.50": 1.0, "0.85": 0.0}


def test_evaluate_instances_aggregates_over_images():
    gt1 = strips((0, 4, 1), (5, 9, 2), (10, 14, 3), (15, 19, 4))
    pred1 = strips((0, 4, 1), (5, 9, 2), (25, 29, 3))  # tp 2 fp 1 fn 2
    gt2 = strips((0, 10, 1))
    pred2 = strips((0, 10, 1))  # tp 1
    res = evaluate_instances([(gt1, pred1), (gt2, pred2)], iou=0.5, ap_thresholds=[0.5, 0.75])
    assert res["n_images"] == 2
    assert (res["tp"], res["fp"], res["fn"]) == (3, 1, 2)
    assert res["f1"] == pytest.approx((4 / 7 + 1) / 2)
    assert res["precision"] == pytest.approx((2 / 3 + 1) / 2)
    assert res["recall"] == pytest.approx((0.5 + 1) / 2)
    assert res["f1_pooled"] == pytest.approx(6 / 9)
    assert res["ap"] == pytest.approx({"0.50": (0.4 + 1) / 2, "0.75": (0.4 + 1) / 2})
    assert list(evaluate_instances([(gt2, pred2)])["ap"]) == [f"{t:.2f}" for t in np.arange(0.5, 1.0, 0.05)]


# ---------------------------------------------------------------- real label images


def real_label_files() -> list[Path]:
    files = sorted((REALDATA / "neurips_cellseg" / "labels").glob("*.tiff"))
    files += sorted((REALDATA / "dsb2018_stage1test" / "labels").glob("*.tif"))
    if not files:
        pytest.skip(f"real label images not found under {REALDATA}")
    return files


def perturbations(lab: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Eroded, dilated-and-shifted, and dropped-and-merged versions of a label image."""
    eroded = np.where(find_boundaries(lab, mode="inner"), 0, lab)
    dilated = expand_labels(lab, distance=2)
    shifted = np.zeros_like(lab)
    shifted[3:, :-2] = dilated[:-3, 2:]
    edited = lab.copy()
    ids = np.unique(lab)[1:]
    edited[np.isin(edited, rng.choice(ids, size=max(1, len(ids) // 8), replace=False))] = 0
    # merge two horizontally touching cells, if any
    left, right = edited[:, :-1], edited[:, 1:]
    touch = (left > 0) & (right > 0) & (left != right)
    if touch.any():
        r, c = np.argwhere(touch)[0]
        edited[edited == right[r, c]] = left[r, c]
    return [eroded, shifted, edited]


def brute_counts(gt: np.ndarray, pred: np.ndarray, thr: float) -> tuple[int, int, int]:
    """Independent matcher: at thr >= 0.5 every cell has at most one partner, so no assignment is needed."""
    gt_boxes, pred_boxes = find_objects(gt), find_objects(pred)
    cand = []
    for i, gbox in enumerate(gt_boxes, start=1):
        if gbox is None:
            continue
        for j in np.unique(pred[gbox][gt[gbox] == i]):
            if j == 0:
                continue
            pbox = pred_boxes[j - 1]
            box = tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(gbox, pbox))
            g, p = gt[box] == i, pred[box] == j
            if (g & p).sum() / (g | p).sum() >= thr:
                cand.append((i, j))
    assert len({c[0] for c in cand}) == len({c[1] for c in cand}) == len(cand)
    n_gt, n_pred = len(np.unique(gt)) - 1, len(np.unique(pred)) - 1
    return len(cand), n_pred - len(cand), n_gt - len(cand)


def brute_border(lab: np.ndarray, margin: int) -> np.ndarray:
    edge = np.concatenate([lab[:margin].ravel(), lab[-margin:].ravel(), lab[:, :margin].ravel(), lab[:, -margin:].ravel()])
    return np.where(np.isin(lab, edge[edge > 0]), 0, lab)


@pytest.fixture(scope="module")
def real_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    import tifffile

    rng = np.random.default_rng(7)
    pairs = []
    for f in real_label_files():
        gt = tifffile.imread(f).astype(np.int32)
        pairs += [(gt, pred) for pred in perturbations(gt, rng)]
    return pairs


@pytest.mark.parametrize("margin", [0, 2])
def test_evaluate_instances_on_perturbed_real_labels(real_pairs, margin):
    expected = []
    for gt, pred in real_pairs:
        g, p = (brute_border(gt, margin), brute_border(pred, margin)) if margin else (gt, pred)
        expected.append({t: brute_counts(g, p, t) for t in (0.5, 0.75)})
    res = evaluate_instances(real_pairs, iou=0.5, border_margin=margin, ap_thresholds=[0.5, 0.75])
    counts = np.array([e[0.5] for e in expected])
    assert (res["tp"], res["fp"], res["fn"]) == tuple(int(v) for v in counts.sum(axis=0))
    scored = [i for i, (tp, _, fn) in enumerate(counts) if tp + fn]  # images with a cell to find
    assert res["unscored_images"] == [i for i in range(len(counts)) if i not in scored]
    f1 = [2 * tp / (2 * tp + fp + fn) for tp, fp, fn in counts[scored]]
    assert res["f1"] == pytest.approx(np.mean(f1)) and res["n_images"] == len(scored)
    for t in (0.5, 0.75):
        ap = [tp / (tp + fp + fn) for tp, fp, fn in (expected[i][t] for i in scored)]
        assert res["ap"][f"{t:.2f}"] == pytest.approx(np.mean(ap))
    # the perturbations must actually hurt, otherwise this test checks nothing
    assert 0.2 < res["f1"] < 0.99


def test_an_image_with_no_cell_left_to_score_is_reported_not_averaged_in(caplog):
    """All of one image's cells lie on the border: under the empty-image rule it would score F1 1 (or 0)
    whatever the model did; it is listed and left out of the means, its false positives still pooled."""
    inner = np.zeros((32, 32), np.int32)
    inner[10:20, 10:20] = 1
    on_border = np.zeros((32, 32), np.int32)
    on_border[0:6, 0:6] = 1
    with caplog.at_level("WARNING"):
        res = evaluate_instances([(inner, np.zeros_like(inner)), (on_border, on_border)], border_margin=2)
    assert res["unscored_images"] == [1] and res["n_images"] == 1
    assert res["f1"] == 0.0 and res["ap"]["0.50"] == 0.0  # was (0 + 1) / 2 = 0.5: no cell found is F1 0
    assert "1 of 2 image(s) have no ground-truth cell to score" in caplog.text
