"""Tests for cellzoo.metrics.semantic against hand computations and MONAI's implementations."""

from __future__ import annotations

import numpy as np
import pytest

from cellzoo.errors import InputError
from cellzoo.metrics import dice_score, iou_score, semantic_scores


def test_binary_hand_cases():
    pred = np.zeros((4, 4), bool)
    gt = np.zeros((4, 4), bool)
    pred[0, :] = True  # 4 px
    gt[0, :2] = True
    gt[1, :2] = True  # 4 px, 2 shared
    assert iou_score(pred, gt) == pytest.approx(2 / 6)
    assert dice_score(pred, gt) == pytest.approx(4 / 8)
    assert iou_score(pred.astype(np.uint8), gt.astype(float)) == pytest.approx(2 / 6)
    assert iou_score(pred, pred) == dice_score(pred, pred) == 1.0
    assert iou_score(pred, ~pred) == dice_score(pred, ~pred) == 0.0


def test_binary_empty_conventions():
    empty = np.zeros((3, 3), bool)
    full = np.ones((3, 3), bool)
    assert iou_score(empty, empty) == 1.0
    assert dice_score(empty, empty) == 1.0
    assert iou_score(empty, full) == 0.0
    assert dice_score(full, empty) == 0.0


def test_semantic_scores_hand_case():
    gt = np.array([[0, 0, 1, 1], [0, 2, 2, 2]])
    pred = np.array([[0, 1, 1, 1], [0, 2, 2, 0]])
    res = semantic_scores(pred, gt, num_classes=4)
    # class 0: gt 3 px, pred 3 px, shared 2; class 1: gt 2, pred 3, shared 2; class 2: gt 3, pred 2, shared 2
    np.testing.assert_allclose(res["iou"][:3], [2 / 4, 2 / 3, 2 / 3])
    np.testing.assert_allclose(res["dice"][:3], [4 / 6, 4 / 5, 4 / 5])
    assert np.isnan(res["iou"][3]) and np.isnan(res["dice"][3])  # class 3 absent from both
    assert res["mean_iou"] == pytest.approx((2 / 4 + 2 / 3 + 2 / 3) / 3)
    assert res["mean_dice"] == pytest.approx((4 / 6 + 4 / 5 + 4 / 5) / 3)
    assert res["mean_iou_foreground"] == pytest.approx(2 / 3)
    assert res["num_classes"] == 4
    assert semantic_scores(pred, gt)["num_classes"] == 3


def test_semantic_scores_binary_map_agrees_with_binary_functions():
    rng = np.random.default_rng(0)
    pred, gt = rng.integers(0, 2, (32, 32)), rng.integers(0, 2, (32, 32))
    res = semantic_scores(pred, gt)
    assert res["iou"][1] == pytest.approx(iou_score(pred, gt))
    assert res["dice"][1] == pytest.approx(dice_score(pred, gt))
    assert res["iou"][0] == pytest.approx(iou_score(pred == 0, gt == 0))


@pytest.mark.slow  # importing monai alone takes 20+ s on 2 cores
@pytest.mark.parametrize("shape", [(40, 48), (6, 20, 24)])
def test_against_monai(shape):
    import torch
    from monai.metrics import DiceMetric, compute_iou
    from monai.networks.utils import one_hot

    rng = np.random.default_rng(1)
    n_classes = 4
    gt = rng.integers(0, n_classes, shape)
    pred = np.where(rng.random(shape) < 0.6, gt, rng.integers(0, n_classes, shape))

    def onehot(x):
        return one_hot(torch.as_tensor(x)[None, None], num_classes=n_classes)

    ref_iou = compute_iou(onehot(pred), onehot(gt), include_background=True)[0].numpy()
    dice_metric = DiceMetric(include_background=True, reduction="none")
    ref_dice = dice_metric(onehot(pred), onehot(gt))[0].numpy()
    res = semantic_scores(pred, gt, num_classes=n_classes)
    np.testing.assert_allclose(res["iou"], ref_iou, rtol=1e-6)
    np.testing.assert_allclose(res["dice"], ref_dice, rtol=1e-6)
    for c in range(n_classes):
        assert iou_score(pred == c, gt == c) == pytest.approx(float(ref_iou[c]), rel=1e-6)
        assert dice_score(pred == c, gt == c) == pytest.approx(float(ref_dice[c]), rel=1e-6)


def test_bad_inputs_raise_input_error():
    a = np.zeros((4, 4), np.uint8)
    with pytest.raises(InputError):
        iou_score(a, np.zeros((4, 5), np.uint8))
    with pytest.raises(InputError):
        dice_score(a, np.full((4, 4), 0.5))  # probabilities, not a mask
    with pytest.raises(InputError):
        dice_score(a, np.full((4, 4), np.nan))
    with pytest.raises(InputError):
        semantic_scores(a, a + 0.5)
    with pytest.raises(InputError):
        semantic_scores(a + 3, a, num_classes=2)
    with pytest.raises(InputError):
        semantic_scores(a, np.zeros((3, 4), np.uint8))
