"""Tests for the MEDIAR building blocks: network, transforms, loss, samplers and modality discovery."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, TensorDataset

from cellzoo.methods.mediar import (
    AmplifiedSampler,
    BoundaryExclusiond,
    CellAwareIntensityd,
    MEDIARFormer,
    MEDIARLoss,
    MemoryReplayBatchSampler,
    discover_modalities,
    encoder_embeddings,
    stack_target,
)

TINY = dict(encoder_name="mit_b0", decoder_channels=(64, 32, 32, 16, 16), decoder_pab_channels=32)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small tensors run faster on one thread


@pytest.fixture(scope="module")
def tiny() -> MEDIARFormer:
    torch.manual_seed(0)
    return MEDIARFormer(**TINY)


@pytest.fixture
def no_init(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip random weight initialisation: building the 121M-parameter model then only allocates."""
    import segmentation_models_pytorch.encoders.mix_transformer as mit

    for name in ("uniform_", "normal_"):
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, **k: self)
    monkeypatch.setattr(mit, "trunc_normal_", lambda tensor, *a, **k: tensor)


# ---------------------------------------------------------------- network


def test_tiny_forward_backward_shape(tiny: MEDIARFormer) -> None:
    tiny.train()
    x = torch.randn(2, 3, 32, 64)
    y = tiny(x)
    assert y.shape == (2, 3, 32, 64)
    y.square().mean().backward()
    assert tiny.cellprob_head[0].weight.grad is not None
    assert tiny.gradflow_head[3].weight.grad.abs().sum() > 0
    tiny.zero_grad()


def test_decoder_uses_mish_not_relu(tiny: MEDIARFormer) -> None:
    kinds = [type(m) for m in tiny.decoder.modules()]
    assert nn.Mish in kinds
    assert nn.ReLU not in kinds
    # heads adapt to the last decoder width: 16 -> 8 -> (1 | 2)
    assert tiny.cellprob_head[0].in_channels == 16 and tiny.cellprob_head[0].out_channels == 8
    assert tiny.cellprob_head[3].out_channels == 1 and tiny.gradflow_head[3].out_channels == 2


@pytest.mark.parametrize("shape", [(1, 3, 64, 80), (1, 3, 48, 64)])
def test_non_divisible_input_raises(tiny: MEDIARFormer, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="divisible by 32"):
        tiny(torch.zeros(shape))


def test_default_parameter_count(no_init: None) -> None:
    model = MEDIARFormer()
    n = sum(p.numel() for p in model.parameters())
    assert 110e6 <= n <= 130e6
    assert model.cellprob_head[0].in_channels == 64 and model.cellprob_head[0].out_channels == 32


# ---------------------------------------------------------------- transforms


def _cells_image(n_cells: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(3, 40, 8*n) positive random image and (1, 40, 8*n) labels: n 6x6 squares with sparse ids."""
    rng = np.random.default_rng(1)
    label = np.zeros((1, 40, 8 * n_cells), dtype=np.int32)
    for i in range(n_cells):
        label[0, 10:16, 8 * i + 1 : 8 * i + 7] = 3 * i + 5
    img = rng.uniform(0.2, 1.0, (3, *label.shape[1:])).astype(np.float32)
    return img, label


def test_cell_aware_intensity_scales_whole_cells_only() -> None:
    img, label = _cells_image(10)
    t = CellAwareIntensityd(prob=1.0)
    t.set_random_state(3)
    out = t({"img": img, "label": label})["img"]
    ratio = out / img
    assert np.allclose(ratio[:, label[0] == 0], 1.0)  # background untouched
    assert len(t.chosen) in (4, 5)  # stochastic rounding of 10 * 0.4
    factors = set()
    for cid in np.unique(label[label > 0]):
        r = ratio[:, label[0] == cid]
        assert np.allclose(r, r.flat[0], rtol=1e-5)  # one factor for the whole cell, all channels
        assert 1.0 - 1e-6 <= r.flat[0] <= 1.7 + 1e-6
        changed = not np.isclose(r.flat[0], 1.0)
        assert changed == (int(cid) in t.chosen) or np.isclose(r.flat[0], 1.0, atol=1e-4)
        factors.add(round(float(r.flat[0]), 5))
    assert len(factors) > 2  # per-cell factors differ


def test_cell_aware_intensity_fraction_and_determinism() -> None:
    img, label = _cells_image(7)
    t = CellAwareIntensityd(prob=1.0, cell_fraction=0.4)
    fractions = []
    for seed in range(300):
        t.set_random_state(seed)
        t({"img": img, "label": label})
        fractions.append(len(t.chosen) / 7)
    assert abs(np.mean(fractions) - 0.4) < 0.03
    a = CellAwareIntensityd(prob=1.0).set_random_state(11)({"img": img, "label": label})["img"]
    b = CellAwareIntensityd(prob=1.0).set_random_state(11)({"img": img, "label": label})["img"]
    np.testing.assert_array_equal(a, b)
    untouched = CellAwareIntensityd(prob=0.0).set_random_state(0)({"img": img, "label": label})["img"]
    np.testing.assert_array_equal(untouched, img)


def test_boundary_exclusion_two_touching_cells() -> None:
    label = np.zeros((1, 12, 14), dtype=np.int32)
    label[0, 3:9, 2:7] = 1
    label[0, 3:9, 7:12] = 2
    out = BoundaryExclusiond(min_cell_area=0, ignore_key="ignore")({"label": label})
    expected = np.zeros((12, 14), dtype=np.int32)
    expected[4:8, 3:6] = 1  # each cell loses its 1-px rim, including both sides of the shared edge
    expected[4:8, 8:11] = 2
    np.testing.assert_array_equal(out["label"][0], expected)
    np.testing.assert_array_equal(out["ignore"][0], (label[0] > 0) & (expected == 0))


def test_boundary_exclusion_keeps_small_cells_and_image_border() -> None:
    label = np.zeros((1, 12, 14), dtype=np.int32)
    label[0, 0:6, 0:5] = 1  # touches the top-left image corner
    label[0, 8:10, 8:10] = 2  # 4 px < min_cell_area
    out = BoundaryExclusiond(min_cell_area=10, border_width=2)({"label": label})["label"][0]
    expected = label[0].copy()
    expected[5, 2:5] = 0  # bottom rim of cell 1 outside the 2-px border band
    expected[2:6, 4] = 0  # right rim of cell 1 outside the band
    np.testing.assert_array_equal(out, expected)


# ---------------------------------------------------------------- loss


def _loss_target() -> tuple[torch.Tensor, torch.Tensor]:
    """Flows (1,2,4,4) = (0.6, 0.8) on the left half cells, labels (1,1,4,4)."""
    label = torch.zeros(1, 1, 4, 4)
    label[..., :2] = 7
    flows = torch.zeros(1, 2, 4, 4)
    flows[:, 0][label[:, 0] > 0] = 0.6
    flows[:, 1][label[:, 0] > 0] = 0.8
    return flows, label


def target(flows: torch.Tensor, label: torch.Tensor, ignore: torch.Tensor | None = None) -> torch.Tensor:
    """The training chain's stacked target (stack_target) for a batch of one."""
    data = {"flows": flows[0].numpy(), "label": label[0].numpy(), "ignore": None if ignore is None else ignore[0].numpy()}
    stacked = stack_target(data, "flows", "label", None if ignore is None else "ignore", "target")["target"]
    return torch.from_numpy(stacked)[None]


def test_loss_perfect_prediction_is_zero() -> None:
    flows, label = _loss_target()
    pred = torch.cat([5.0 * flows, torch.where(label > 0, 40.0, -40.0)], dim=1)
    assert MEDIARLoss()(pred, target(flows, label)).item() < 1e-12


def test_loss_hand_computed() -> None:
    flows, label = _loss_target()
    pred = torch.zeros(1, 3, 4, 4)
    # BCE(0 logits) = ln 2; MSE: half the pixels have (5*0.6)^2 + (5*0.8)^2 = 25 over 2 channels -> 6.25
    expected = math.log(2) + 0.5 * 6.25
    loss = MEDIARLoss()
    assert loss(pred, target(flows, label)).item() == pytest.approx(expected, rel=1e-6)
    # ignoring every cell pixel leaves only background: BCE ln 2, MSE 0
    ignore = (label > 0).float()
    assert loss(pred, target(flows, label, ignore)).item() == pytest.approx(math.log(2), rel=1e-6)


# ---------------------------------------------------------------- samplers and modalities


def test_amplified_sampler_counts_and_determinism() -> None:
    clusters = [0] * 100 + [1] * 3 + [2] * 60 + [3] * 1
    sampler = AmplifiedSampler(clusters, min_per_cluster=50, seed=7)
    idx = np.array(list(sampler))
    assert len(idx) == len(sampler) == 100 + 50 + 60 + 50
    assert idx.min() >= 0 and idx.max() < len(clusters)
    per_cluster = np.bincount(np.asarray(clusters)[idx])
    np.testing.assert_array_equal(per_cluster, [100, 50, 60, 50])
    assert set(np.bincount(idx, minlength=len(clusters))[100:103]) <= {16, 17}  # cyclic fill of 3 -> 50
    assert (np.bincount(idx, minlength=len(clusters)) >= 1).all()
    again = AmplifiedSampler(clusters, min_per_cluster=50, seed=7)
    assert list(again) == idx.tolist()
    again.set_epoch(1)
    assert list(again) != idx.tolist()


def test_memory_replay_batches() -> None:
    n_target, n_replay = 20, 5
    sampler = MemoryReplayBatchSampler(n_target, n_replay, batch_size=9, replay_per_batch=1, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3
    for batch in batches:
        assert sum(i >= n_target for i in batch) == 1
        assert all(0 <= i < n_target + n_replay for i in batch)
    targets = sorted(i for b in batches for i in b if i < n_target)
    assert targets == list(range(n_target))
    data = ConcatDataset([TensorDataset(torch.zeros(n_target)), TensorDataset(torch.ones(n_replay))])
    loader = DataLoader(data, batch_sampler=sampler)
    assert [int(b[0].sum()) for b in loader] == [1, 1, 1]


def test_memory_replay_with_amplified_targets() -> None:
    amplified = AmplifiedSampler([0] * 10 + [1] * 2, min_per_cluster=6, seed=1)
    sampler = MemoryReplayBatchSampler(12, 4, batch_size=5, replay_per_batch=2, target_sampler=amplified)
    batches = list(sampler)
    assert len(batches) == math.ceil(16 / 3)
    assert all(sum(i >= 12 for i in b) == 2 for b in batches)
    assert sum(i < 12 for b in batches for i in b) == 16


def test_discover_modalities_separates_blobs(caplog) -> None:
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1, 2], 30)
    centres = np.array([[0.0, 0.0, 0.0, 0.0], [8.0, 0.0, 0.0, 0.0], [0.0, 8.0, 8.0, 0.0]])
    data = centres[truth] + rng.normal(0, 0.5, (90, 4))
    with caplog.at_level("INFO", logger="cellzoo.methods.mediar.modality"):
        found = discover_modalities(data, k=3, seed=0)
    assert "90 images in 3 modalities (k = 3 asked; images per modality: min 30, median 30, max 30; 0 empty)" in caplog.text
    # perfect separation: a bijection between true blobs and found clusters
    pairs = set(zip(truth.tolist(), found.tolist()))
    assert len(pairs) == 3 and len({f for _, f in pairs}) == 3
    assert discover_modalities(data[:5], k=40).max() < 5  # k clipped to N


def test_encoder_embeddings_pool_deepest_features(tiny: MEDIARFormer) -> None:
    conv = nn.Conv2d(3, 4, 1)
    images = [torch.randn(2, 3, 8, 8), torch.randn(3, 8, 8)]
    emb = encoder_embeddings(conv, images)
    with torch.no_grad():
        expected = torch.cat([conv(images[0]), conv(images[1][None])]).mean(dim=(-2, -1)).numpy()
    np.testing.assert_allclose(emb, expected, rtol=1e-5, atol=1e-6)
    tiny.train()
    emb = encoder_embeddings(tiny.encoder, [{"img": torch.randn(2, 3, 32, 32)}])
    assert emb.shape == (2, 256) and tiny.encoder.training  # mode restored


# ---------------------------------------------------------------- transform chains


def _synthetic_pair() -> dict[str, np.ndarray]:
    """300x200 grayscale image with 12 bright discs and their instance labels."""
    from skimage.draw import disk

    rng = np.random.default_rng(0)
    img = rng.normal(100.0, 5.0, (300, 200)).astype(np.float32)
    label = np.zeros((300, 200), dtype=np.int32)
    for i in range(12):
        rr, cc = disk((25 + 22 * i, 40 + 10 * (i % 12)), 9, shape=label.shape)
        label[rr, cc] = i + 1
        img[rr, cc] += 400.0
    return {"img": img, "label": label}


def _check_chain_output(out: dict, roi: int) -> None:
    img = out["image"]
    assert tuple(img.shape) == (3, roi, roi) and img.dtype == torch.float32
    assert torch.isfinite(img).all() and img.abs().max() < 20 and 0.0 <= float(img.median()) <= 1.0
    assert tuple(out["label"].shape) == (1, roi, roi) and out["label"].dtype == torch.int32


def _pair_with_image_key() -> dict:
    pair = _synthetic_pair()
    return {"image": pair["img"], "label": pair["label"]}


def test_train_chain_with_boundary_exclusion() -> None:
    from cellzoo.methods.mediar import mediar_train_transforms

    chain = mediar_train_transforms(roi_size=128, load=False, boundary_exclusion=True, ignore_key="ignore")
    chain.set_random_state(0)
    pair = _pair_with_image_key()
    for _ in range(3):
        out = chain(pair)
        _check_chain_output(out, 128)
        assert set(np.unique(np.asarray(out["label"]))) <= set(np.unique(pair["label"]))  # ids survive zoom
        assert tuple(out["ignore"].shape) == (1, 128, 128)
        assert not bool((out["label"][out["ignore"] > 0]).any())  # excluded pixels are background
        assert tuple(out["target"].shape) == (4, 128, 128)  # flows, cell, ignore
        torch.testing.assert_close(out["target"][3] > 0, out["ignore"][0] > 0)


def test_train_chain_flows_follow_the_augmented_labels() -> None:
    """Flows are computed once before the random steps; after flips/rotations/zoom they still match."""
    from cellzoo.targets.flows import labels_to_flows
    from cellzoo.methods.mediar import mediar_train_transforms

    chain = mediar_train_transforms(roi_size=128, load=False)
    chain.set_random_state(1)
    cosines = []
    for _ in range(6):
        out = chain(_pair_with_image_key())
        _check_chain_output(out, 128)
        flows, label = np.asarray(out["flows"]), np.asarray(out["label"][0])
        assert flows.shape == (2, 128, 128)
        assert not flows[:, label == 0].any()  # no flow outside cells
        np.testing.assert_allclose(np.asarray(out["target"][:2]), flows)
        np.testing.assert_array_equal(np.asarray(out["target"][2]), (label > 0).astype(np.float32))
        inside = label > 0
        if inside.sum() > 50:
            # cropping cuts cells, so recomputed flows of cut cells differ; whole-cell agreement dominates
            cosines.append(float((flows * labels_to_flows(label)).sum(0)[inside].mean()))
    assert np.median(cosines) > 0.7


def test_valid_chain_from_files(tmp_path) -> None:
    import tifffile

    from cellzoo.methods.mediar import mediar_valid_transforms

    pair = _synthetic_pair()
    tifffile.imwrite(tmp_path / "cell_00001.tif", pair["img"].astype(np.uint16))
    tifffile.imwrite(tmp_path / "cell_00001_label.tiff", pair["label"].astype(np.uint16))
    out = mediar_valid_transforms()(
        {"image": str(tmp_path / "cell_00001.tif"), "label": str(tmp_path / "cell_00001_label.tiff")}
    )
    assert tuple(out["image"].shape) == (3, 300, 200)
    assert float(out["image"].min()) == 0.0 and float(out["image"].max()) == 1.0
    torch.testing.assert_close(out["image"][0], out["image"][2])  # grayscale repeated
    np.testing.assert_array_equal(np.asarray(out["label"][0]), pair["label"])


def test_valid_chain_drops_png_alpha(tmp_path) -> None:
    import imageio.v3 as iio

    from cellzoo.methods.mediar import mediar_valid_transforms

    rgba = np.zeros((64, 32, 4), dtype=np.uint8)
    rgba[..., :3] = np.arange(64)[:, None, None]
    rgba[..., 3] = 255  # constant alpha would become an all-zero channel if it were kept
    iio.imwrite(tmp_path / "cell.png", rgba)
    iio.imwrite(tmp_path / "label.png", (rgba[..., 0] > 31).astype(np.uint8))
    out = mediar_valid_transforms()({"image": str(tmp_path / "cell.png"), "label": str(tmp_path / "label.png")})
    assert tuple(out["image"].shape) == (3, 64, 32)
    np.testing.assert_allclose(np.asarray(out["image"][0, :, 0]), np.arange(64) / 63, atol=1e-6)
    assert int(out["label"].sum()) == 32 * 32
