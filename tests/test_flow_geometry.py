"""Flow-aware flips and rotations give the flows of the flipped/rotated labels."""

from __future__ import annotations

import numpy as np
import pytest

from flow_checks import mean_flow_cosine
from cellzoo.synthetic import render_field
from cellzoo.targets.flow_geometry import (
    NormalizeFlowsd,
    RandFlowFlipd,
    RandFlowRotate90d,
    flip_flows,
    normalize_flows,
    rot90_flows,
)
from cellzoo.targets.flows import labels_to_flows


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return render_field(size=(96, 80), seed=3, modalities=("nuclear",))["labels_cells"]


@pytest.mark.parametrize("axis", [0, 1])
def test_flip_matches_flows_of_flipped_labels(labels, axis):
    flipped = flip_flows(labels_to_flows(labels), axis)
    expected = labels_to_flows(np.flip(labels, axis))
    assert mean_flow_cosine(flipped, expected, np.flip(labels, axis) > 0) > 0.98
    # without negating the component the agreement is clearly worse: the test can tell
    naive = np.flip(labels_to_flows(labels), axis=1 + axis)
    assert mean_flow_cosine(naive, expected, np.flip(labels, axis) > 0) < 0.8


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rot90_matches_flows_of_rotated_labels(labels, k):
    rotated_labels = np.rot90(labels, k)
    rotated = rot90_flows(labels_to_flows(labels), k)
    assert mean_flow_cosine(rotated, labels_to_flows(rotated_labels), rotated_labels > 0) > 0.98


def test_rot90_four_times_is_identity(labels):
    flows = labels_to_flows(labels)
    np.testing.assert_array_equal(rot90_flows(flows, 4), flows)
    np.testing.assert_allclose(rot90_flows(rot90_flows(flows, 1), 3), flows)


def test_normalize_flows_unit_inside_zero_outside():
    flows = np.stack([np.full((4, 5), 3.0), np.full((4, 5), 4.0)]).astype(np.float32)
    labels = np.zeros((4, 5), np.int32)
    labels[1:3, 1:4] = 7
    out = normalize_flows(flows, labels)
    np.testing.assert_allclose(out[:, labels > 0], np.array([[0.6], [0.8]]).repeat(6, axis=1), rtol=1e-6)
    assert not out[:, labels == 0].any()
    d = NormalizeFlowsd()({"flows": flows, "label": labels[None]})
    np.testing.assert_allclose(d["flows"], out)


def test_random_transforms_keep_image_labels_and_flows_together(labels):
    image = labels.astype(np.float32)[None]
    data = {"image": image, "label": labels[None], "flows": labels_to_flows(labels)}
    for transform in (RandFlowFlipd(["image", "label"], prob=1.0), RandFlowRotate90d(["image", "label"], prob=1.0)):
        transform.set_random_state(5)
        out = transform(data)
        np.testing.assert_array_equal(out["image"][0], out["label"][0].astype(np.float32))
        assert mean_flow_cosine(out["flows"], labels_to_flows(out["label"][0]), out["label"][0] > 0) > 0.98


def test_mean_flow_cosine_hand_cases():
    a = np.zeros((2, 1, 4), np.float32)
    a[:, 0, 0] = (1, 0)  # same direction as b: 1
    a[:, 0, 1] = (0, 2)  # opposite to b: -1
    b = np.zeros_like(a)
    b[:, 0, 0] = (3, 0)
    b[:, 0, 1] = (0, -1)
    b[:, 0, 2] = (1, 1)  # a is zero here: 0; pixel 3 is zero in both: 1
    mask = np.ones((1, 4), bool)
    assert mean_flow_cosine(a, b, mask) == pytest.approx((1 - 1 + 0 + 1) / 4)
    assert mean_flow_cosine(a, b, np.array([[True, False, False, False]])) == pytest.approx(1.0)
