"""Tests for cellzoo.metrics.image against skimage.metrics, scipy.stats and scipy.spatial.distance."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cosine, euclidean
from scipy.stats import pearsonr
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from cellzoo.errors import InputError
from cellzoo.metrics import image_metrics, mean_image_metrics, percentile_normalize


def test_percentile_normalize_hand_cases():
    x = np.arange(1001, dtype=np.uint16)
    # linear-interpolated percentiles of 0..1000: 2% -> 20, 99.8% -> 998
    np.testing.assert_allclose(percentile_normalize(x), (x - 20.0) / 978.0)
    np.testing.assert_allclose(percentile_normalize(np.array([2, 4, 6]), low=0, high=100), [0.0, 0.5, 1.0])
    assert percentile_normalize(x).dtype == np.float64
    np.testing.assert_array_equal(percentile_normalize(np.full((3, 3), 7.0)), 0.0)  # eps avoids 0/0


def correlated_pair(rng: np.random.Generator, shape) -> tuple[np.ndarray, np.ndarray]:
    gt = rng.gamma(2.0, 100.0, shape)
    pred = 0.7 * gt + rng.normal(0, 40, shape) + 50
    return pred, gt


@pytest.mark.parametrize("shape", [(64, 80), (9, 32, 40)])
def test_image_metrics_against_library_references(shape):
    rng = np.random.default_rng(0)
    pred, gt = correlated_pair(rng, shape)
    res = image_metrics(pred, gt)
    p, g = percentile_normalize(pred), percentile_normalize(gt)
    dr = g.max() - g.min()
    assert res["mae"] == pytest.approx(np.mean(np.abs(p - g)))
    assert res["mse"] == pytest.approx(mean_squared_error(g, p))
    assert res["psnr"] == pytest.approx(peak_signal_noise_ratio(g, p, data_range=dr))
    assert res["ssim"] == pytest.approx(structural_similarity(g, p, data_range=dr))
    assert res["pcc"] == pytest.approx(pearsonr(p.ravel(), g.ravel())[0])
    assert res["euclidean"] == pytest.approx(euclidean(p.ravel(), g.ravel()))
    assert res["cosine"] == pytest.approx(cosine(p.ravel(), g.ravel()))
    assert 0.3 < res["pcc"] < 0.99 and 0 < res["ssim"] < 0.99  # a non-trivial pair


def test_without_normalisation_and_explicit_data_range():
    rng = np.random.default_rng(1)
    pred, gt = correlated_pair(rng, (48, 48))
    res = image_metrics(pred, gt, normalize=False, data_range=1000.0)
    assert res["mae"] == pytest.approx(np.mean(np.abs(pred - gt)))
    assert res["psnr"] == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=1000.0))
    assert res["ssim"] == pytest.approx(structural_similarity(gt, pred, data_range=1000.0))
    assert res["cosine"] == pytest.approx(cosine(pred.ravel(), gt.ravel()))
    # pcc is invariant to the affine normalisation, mae is not
    assert res["pcc"] == pytest.approx(image_metrics(pred, gt)["pcc"])
    assert res["mae"] != pytest.approx(image_metrics(pred, gt)["mae"])


def test_thin_3d_stack_uses_smaller_ssim_window():
    rng = np.random.default_rng(2)
    pred, gt = correlated_pair(rng, (5, 32, 32))
    p, g = percentile_normalize(pred), percentile_normalize(gt)
    ref = structural_similarity(g, p, data_range=g.max() - g.min(), win_size=5)
    assert image_metrics(pred, gt)["ssim"] == pytest.approx(ref)


def test_identical_images():
    rng = np.random.default_rng(3)
    img = rng.random((32, 32)) * 500
    res = image_metrics(img, img)
    assert res["mae"] == 0.0 and res["mse"] == 0.0 and res["euclidean"] == 0.0
    assert res["pcc"] == pytest.approx(1.0)
    assert res["cosine"] == pytest.approx(0.0, abs=1e-12)
    assert res["ssim"] == pytest.approx(1.0)
    assert res["psnr"] == float("inf")


def test_mean_image_metrics():
    rng = np.random.default_rng(4)
    pairs = [correlated_pair(rng, (32, 32)) for _ in range(3)]
    per_image = [image_metrics(p, g) for p, g in pairs]
    res = mean_image_metrics(pairs)
    assert res["n_images"] == 3
    for key in ("mae", "mse", "psnr", "ssim", "pcc", "euclidean", "cosine"):
        assert res[key] == pytest.approx(np.mean([m[key] for m in per_image]))


def test_bad_inputs_raise_input_error():
    a = np.zeros((16, 16))
    with pytest.raises(InputError):
        image_metrics(a, np.zeros((16, 17)))
    bad = a.copy()
    bad[3, 3] = np.nan
    with pytest.raises(InputError):
        image_metrics(bad, a)
    bad[3, 3] = np.inf
    with pytest.raises(InputError):
        image_metrics(a, bad)
    with pytest.raises(InputError):
        image_metrics(np.zeros(16), np.zeros(16))
    with pytest.raises(InputError):
        mean_image_metrics([])


def test_image_metrics_computes_only_the_named_ones():
    pred, gt = np.random.default_rng(3).random((2, 40, 40))
    full = image_metrics(pred, gt)
    assert image_metrics(pred, gt, names=("pcc", "ssim")) == {"pcc": full["pcc"], "ssim": full["ssim"]}
    with pytest.raises(ValueError, match="unknown image metric"):
        image_metrics(pred, gt, names=("pearson",))
