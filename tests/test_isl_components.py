"""Tests for the ISL building blocks: networks and weight transfer, losses, distance targets, watershed, channels."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import tifffile
import torch
from skimage.draw import disk

from cellzoo.engines import transfer_weights
from cellzoo.errors import InputError
from cellzoo.io import read_image, read_labelfree_fields
from cellzoo.methods.isl import (
    DistanceMaskLoss,
    DistanceToInstancesd,
    JaccardLoss,
    ProbabilityToInstancesd,
    ShiftedSigmoid,
    densenet_to_unet_keys,
    distance_to_instances,
    hmax_seeds,
    isl_network,
    nuclei_to_instances,
    select_channels,
)
from cellzoo.metrics import evaluate_instances, instance_scores
from cellzoo.postprocess.instances import remove_small_instances
from cellzoo.synthetic import synthesize
from cellzoo.targets.distance import LabelsToDistanced, labels_to_distance

torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small tensors run faster on one thread
SMALL = dict(decoder_channels=(64, 32, 16, 16, 8))


@pytest.fixture(scope="module")
def pretext(tmp_path_factory) -> tuple[torch.nn.Module, str]:
    """A random pretext network and its state dict saved MONAI-style under "model"."""
    torch.manual_seed(0)
    net = isl_network("fluorescence", **SMALL).eval()
    path = tmp_path_factory.mktemp("isl") / "pretext.pt"
    torch.save({"model": net.state_dict()}, path)
    return net, str(path)


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory) -> tuple[dict, str]:
    """A torchvision-format DenseNet121 state dict, as an ImageNet checkpoint would hold it."""
    torch.manual_seed(1)
    state = torchvision.models.densenet121(weights=None).state_dict()
    path = tmp_path_factory.mktemp("isl") / "densenet121_imagenet.pth"
    torch.save(state, path)
    return state, str(path)


def assert_same_tensors(state: dict, reference: dict, keys) -> None:
    for key in keys:
        assert torch.equal(state[key], reference[key]), key


# ---------------------------------------------------------------- networks


@pytest.mark.parametrize("task,channels", [("fluorescence", 1), ("nuclei", 1), ("cells", 2)])
@pytest.mark.parametrize("shape", [(64, 64), (96, 128)])
def test_network_output_shape(task, channels, shape):
    with torch.no_grad():
        out = isl_network(task, **SMALL).eval()(torch.rand(2, 3, *shape))
    assert out.shape == (2, channels, *shape)
    if task == "nuclei":
        assert out.min() >= 0 and out.max() <= 1


def test_encoder_is_torchvision_densenet121_features(pretext):
    tv = torchvision.models.densenet121(weights=None)
    expected = sum(p.numel() for name, p in tv.named_parameters() if not name.startswith("classifier."))
    got = sum(p.numel() for p in pretext[0].encoder.parameters())
    assert got == expected == 6_953_856  # ~7.0M: DenseNet121 without its 1000-class classifier


def test_pretext_to_nuclei_transfers_every_tensor(pretext):
    net, path = pretext
    torch.manual_seed(5)
    nuclei = isl_network("nuclei", **SMALL).eval()
    match = transfer_weights(nuclei, path)
    reference = net.state_dict()
    assert match.loaded == sorted(reference) and not (match.missing or match.unexpected or match.mismatched)
    with torch.no_grad():  # the nucleus model is the pretext network followed by the shifted sigmoid
        x = torch.rand(1, 3, 64, 64)
        torch.testing.assert_close(nuclei(x), ShiftedSigmoid()(net(x)))


def test_pretext_to_cells_adds_two_random_convolutions(pretext):
    net, path = pretext
    cells = isl_network("cells", **SMALL).eval()
    match = transfer_weights(cells, path)
    assert match.loaded == sorted(net.state_dict())
    assert match.missing == ["segmentation_head.3.bias", "segmentation_head.3.weight", "segmentation_head.5.bias",
                             "segmentation_head.5.weight"]
    added = torch.nn.Sequential(*list(cells.segmentation_head)[3:])
    convs = [m for m in added if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 16, (3, 3)), (16, 2, (3, 3))]
    with torch.no_grad():  # the added layers act on the pretext prediction itself
        x = torch.rand(1, 3, 64, 96)
        torch.testing.assert_close(cells(x), added(net(x)))


def test_imagenet_file_loads_encoder_only(imagenet_file):
    state, path = imagenet_file
    torch.manual_seed(7)
    net = isl_network("nuclei", **SMALL)
    decoder_before = {k: v.clone() for k, v in net.decoder.state_dict().items()}
    match = transfer_weights(net, path, rename=densenet_to_unet_keys)
    encoder = net.encoder.state_dict()
    assert match.unexpected == ["classifier.bias", "classifier.weight"]
    assert len(match.loaded) == len(encoder) and all(k.startswith("encoder.") for k in match.loaded)
    assert torch.equal(encoder["features.conv0.weight"], state["features.conv0.weight"])
    assert_same_tensors(encoder, state, encoder)
    assert_same_tensors(net.decoder.state_dict(), decoder_before, decoder_before)


def test_torchvision_legacy_keys_load(imagenet_file, tmp_path):
    """Old torchvision checkpoints name norm1/conv1 as norm.1/conv.1 and have no num_batches_tracked."""
    state, _ = imagenet_file
    legacy = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v
              for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    renamed = densenet_to_unet_keys(legacy)
    assert set(renamed) == {"encoder." + k if k.startswith("features.") else k for k in state
                            if not k.endswith("num_batches_tracked")}
    torch.save(legacy, tmp_path / "legacy.pth")
    net = isl_network("fluorescence", **SMALL)
    transfer_weights(net, tmp_path / "legacy.pth", rename=densenet_to_unet_keys)
    encoder = net.encoder.state_dict()
    assert_same_tensors(encoder, state, [k for k in encoder if not k.endswith("num_batches_tracked")])


def test_bad_init_files(tmp_path):
    net = isl_network("nuclei", **SMALL)
    with pytest.raises(InputError, match="checkpoint not found"):
        transfer_weights(net, tmp_path / "missing.pt")
    torch.save({"encoder.nothing": torch.zeros(3)}, tmp_path / "nomatch.pt")
    with pytest.raises(InputError, match="no tensor of this checkpoint fits"):
        transfer_weights(net, tmp_path / "nomatch.pt", rename=densenet_to_unet_keys)


def test_shifted_sigmoid_values():
    x = torch.tensor([-1.0, 0.0, 0.5, 1.0, 3.0])
    expected = torch.tensor([1 / (1 + math.exp(-(v - 0.5))) for v in x.tolist()])
    torch.testing.assert_close(ShiftedSigmoid()(x), expected)
    assert ShiftedSigmoid()(torch.tensor(0.5)).item() == 0.5
    # slope=-1 is eq. 1 exactly as printed: 1 / (1 + exp(x - 0.5)).
    printed = torch.tensor([1 / (1 + math.exp(v - 0.5)) for v in x.tolist()])
    torch.testing.assert_close(ShiftedSigmoid(slope=-1.0)(x), printed)


# ---------------------------------------------------------------- losses


def test_jaccard_loss_values():
    target = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 2, 2)
    loss = JaccardLoss()
    assert loss(target.clone(), target).item() == pytest.approx(0.0, abs=1e-6)
    # intersection 1, union 0.5 + 0.5 + 2 - 1 = 2 -> IoU 0.5
    half = torch.tensor([0.5, 0.5, 0.0, 0.0]).reshape(1, 1, 2, 2)
    assert loss(half, target).item() == pytest.approx(0.5, abs=1e-6)
    # intersection 1, union 2 + 1 - 1 = 2
    shifted = torch.tensor([1.0, 0.0, 1.0, 0.0]).reshape(1, 1, 2, 2)
    assert loss(shifted, target).item() == pytest.approx(1 - 1 / 3, abs=1e-6)


def test_distance_mask_loss_values():
    pred = torch.tensor([[[[1.0, 2.0], [0.0, 4.0]], [[2.0, -1.0], [0.0, 3.0]]]])
    target = torch.tensor([[[[0.0, 2.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]]])
    mse = ((1 - 0) ** 2 + 0 + (0 - 1) ** 2 + (4 - 1) ** 2) / 4  # 2.75

    def bce(x, t):
        s = 1 / (1 + math.exp(-x))
        return -(t * math.log(s) + (1 - t) * math.log(1 - s))

    bce_mean = (bce(2, 1) + bce(-1, 0) + bce(0, 0) + bce(3, 1)) / 4
    assert DistanceMaskLoss(alpha=0.0)(pred, target).item() == pytest.approx(mse)
    assert DistanceMaskLoss()(pred, target).item() == pytest.approx(mse + 2000 * bce_mean, rel=1e-6)
    with pytest.raises(ValueError):
        DistanceMaskLoss()(pred[:, :1], target[:, :1])
    # "initial": alpha is the first batch's MSE/BCE ratio (both terms equal), then stays fixed
    initial = DistanceMaskLoss(alpha="initial")
    assert initial(pred, target).item() == pytest.approx(2 * mse, rel=1e-6)
    assert initial.alpha == pytest.approx(mse / bce_mean, rel=1e-6)
    assert initial(pred, torch.zeros_like(target)).item() == pytest.approx(
        DistanceMaskLoss(alpha=mse / bce_mean)(pred, torch.zeros_like(target)).item(), rel=1e-6)
    with pytest.raises(ValueError):
        DistanceMaskLoss(alpha=-1.0)


# ---------------------------------------------------------------- distance targets


def test_disk_distance_peaks_at_radius():
    labels = np.zeros((41, 41), dtype=np.int32)
    labels[disk((20, 20), 10.5)] = 3
    dist = labels_to_distance(labels)
    assert dist.dtype == np.float32
    assert np.unravel_index(dist.argmax(), dist.shape) == (20, 20)
    assert 10 <= dist[20, 20] <= 11
    assert np.all(dist[labels == 0] == 0) and dist[labels > 0].min() == 1
    norm = labels_to_distance(labels, normalize="instance")
    assert norm[20, 20] == pytest.approx(1.0) and norm.max() == pytest.approx(1.0)


def test_touching_squares_keep_own_peaks():
    labels = np.zeros((40, 60), dtype=np.int32)
    labels[10:30, 10:30] = 1
    labels[10:30, 30:50] = 2
    dist = labels_to_distance(labels)
    # Contact columns are 1 px from the other cell (a distance transform of labels > 0 would give ~10 there).
    assert np.all(dist[10:30, 29] == 1) and np.all(dist[10:30, 30] == 1)
    for cell in (1, 2):
        inside = np.where(labels == cell, dist, 0)
        assert inside.max() == 10
        ys, xs = np.nonzero(inside == 10)
        assert set(ys) <= {19, 20} and np.all(labels[ys, xs] == cell)
    norm = labels_to_distance(labels, normalize="instance")
    assert norm[labels == 1].max() == 1 and norm[labels == 2].max() == 1


@pytest.mark.parametrize("as_tensor", [False, True])
def test_labels_to_distanced(as_tensor):
    labels = np.zeros((1, 24, 32), dtype=np.uint16)
    labels[0, 4:12, 4:12] = 1
    labels[0, 4:12, 12:20] = 5
    item = {"label": torch.as_tensor(labels.astype(np.int32)) if as_tensor else labels}
    out = LabelsToDistanced("label")(item)
    target = np.asarray(out["target"])
    assert isinstance(out["target"], torch.Tensor) == as_tensor
    assert target.shape == (2, 24, 32) and target.dtype == np.float32
    np.testing.assert_array_equal(target[0], labels_to_distance(labels[0]))
    np.testing.assert_array_equal(target[1], labels[0] > 0)
    np.testing.assert_array_equal(np.asarray(out["distance"]), target[:1])
    np.testing.assert_array_equal(np.asarray(out["mask"]), target[1:])
    assert out["label"] is item["label"]


# ---------------------------------------------------------------- watershed


def touching_disks() -> np.ndarray:
    labels = np.zeros((64, 64), dtype=np.int32)
    for i, centre in enumerate([(18, 18), (18, 37), (36, 27), (48, 50)], start=1):
        labels[disk(centre, 10, shape=labels.shape)] = i
    return labels


def test_round_trip_touching_disks():
    labels = touching_disks()
    pred = distance_to_instances(labels_to_distance(labels), (labels > 0).astype(np.float32), h=2, min_size=0)
    assert pred.dtype == np.int32 and pred.max() == 4
    assert instance_scores(labels, pred)["thresholds"]["0.50"]["f1"] == 1.0


def test_round_trip_synthetic_isl_cells(tmp_path):
    root = synthesize("isl", 2, tmp_path / "isl", seed=3, size=(128, 128))
    pairs = []
    for field in sorted(root.glob("field_*")):
        labels = tifffile.imread(field / "label_cells.tif").astype(np.int32)
        pred = distance_to_instances(labels_to_distance(labels), labels > 0, h=3, min_size=0)
        pairs.append((labels, pred))
    assert sum(int(g.max()) for g, _ in pairs) >= 10
    assert evaluate_instances(pairs)["f1"] >= 0.95


def test_empty_mask_gives_zeros():
    dist = np.random.default_rng(0).random((32, 32)) * 20
    out = distance_to_instances(dist, np.full((32, 32), 0.2), h=10)
    assert out.dtype == np.int32 and out.shape == (32, 32) and not out.any()
    assert not nuclei_to_instances(np.zeros((16, 16))).any()


def test_paper_h_drops_small_cells_unless_seeded():
    labels = np.zeros((40, 40), dtype=np.int32)
    labels[disk((20, 20), 5)] = 1  # peak ~5 < h = 10
    dist, mask = labels_to_distance(labels), labels > 0
    assert distance_to_instances(dist, mask, h=10).max() == 0
    pred = distance_to_instances(dist, mask, h=10, seed_unseeded=True)
    np.testing.assert_array_equal(pred, labels)


def test_hmax_seeds_merge_peaks_across_shallow_saddle():
    row = np.array([0, 3, 6, 5.5, 5.5, 5.5, 6, 3, 0], dtype=float)
    dist = np.tile(row, (3, 1))
    mask = dist > 0
    assert hmax_seeds(dist, 2.0, mask).max() == 1
    assert hmax_seeds(dist, 0.25, mask).max() == 2
    with pytest.raises(ValueError):
        hmax_seeds(dist, 0, mask)


def test_remove_small_instances():
    labels = np.zeros((20, 20), dtype=np.uint16)
    labels[0:2, 0:2] = 4
    labels[5:15, 5:15] = 9
    out = remove_small_instances(labels, 16)
    assert out.dtype == np.int32 and set(np.unique(out)) == {0, 1}
    np.testing.assert_array_equal(out == 1, labels == 9)


def test_nuclei_to_instances_split():
    labels = np.zeros((40, 60), dtype=np.int32)
    labels[disk((20, 20), 10)] = 1
    labels[disk((20, 38), 10)] = 2  # overlaps disk 1: one connected blob
    prob = (labels > 0).astype(np.float32) * 0.9
    assert nuclei_to_instances(prob).max() == 1
    split = nuclei_to_instances(prob, split=True, h=2)
    assert split.max() == 2
    assert instance_scores(labels, split)["thresholds"]["0.50"]["f1"] == 1.0


# ---------------------------------------------------------------- channels


def test_select_channels_on_synthetic_isl(tmp_path):
    root = synthesize("isl", 1, tmp_path / "isl", seed=1, size=(64, 64))
    entry = read_labelfree_fields(root)[0]
    names = list(entry["inputs"])
    wanted = ["BRIGHTFIELD_z0", "BRIGHTFIELD_z1", "PHASE_CONTRAST"]
    chosen = select_channels(names, wanted)
    assert chosen == wanted
    x = np.stack([read_image(entry["inputs"][n])[0] for n in chosen])
    assert x.shape == (3, 64, 64)
    for i, name in enumerate(wanted):
        np.testing.assert_array_equal(x[i], tifffile.imread(root / "field_001" / f"input_{name}.tif"))
    assert select_channels(names, ["DIC"]) == ["DIC"]
    assert select_channels(names, ["z1", "phase"]) == ["BRIGHTFIELD_z1", "PHASE_CONTRAST"]
    with pytest.raises(InputError, match="matches several"):
        select_channels(names, ["BRIGHTFIELD"])


def test_engine_postprocessing_transforms_round_trip():
    """The dictionary transforms used in the bundle's evaluator give back hand-drawn instances."""
    labels = np.zeros((40, 40), np.int32)
    labels[5:15, 5:15] = 1
    labels[20:35, 20:35] = 2
    distance = torch.from_numpy(labels_to_distance(labels))
    mask_logit = torch.from_numpy(np.where(labels > 0, 10.0, -10.0).astype(np.float32))
    cells = DistanceToInstancesd("pred", h=1.0)({"pred": torch.stack([distance, mask_logit])})["pred"]
    nuclei = ProbabilityToInstancesd("pred")({"pred": torch.from_numpy((labels > 0).astype(np.float32))[None]})["pred"]
    for out in (cells, nuclei):
        assert out.shape == (1, 40, 40)
        assert sorted(np.unique(out.numpy()).tolist()) == [0, 1, 2]
        assert np.array_equal(out.numpy()[0] > 0, labels > 0)
