"""PMC building blocks (cellzoo.methods.pmc, cellzoo.postprocess.boxes, box COCO helpers): colormap tables,
masking geometry, detection targets and their decoding, losses and metrics against hand computations,
CellCentroidFormer's parts, freezing, weight transfer between pretexts and detection, per-slice data and
the files of a detection run. The paper-scale network's test (construction, MONAI's verify_net_in_out, one
training step) is marked slow."""

from __future__ import annotations

import logging

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from cellzoo.engines import transfer_weights
from cellzoo.io import load_coco_json, write_tiff
from cellzoo.io.coco import boxes_to_coco, write_coco_json
from cellzoo.methods import pmc
from cellzoo.methods.pmc.masking import BatchMasking, RandMaskd, mae_mask, padded_mask
from cellzoo.postprocess.boxes import SaveBoxOutputsd, draw_boxes
from cellzoo.synthetic import synthesize

QUICK = {"backbone_args": {"channel_multiplier": 0.25, "depth_multiplier": 0.25}, "neck_dims": (32, 16),
         "head_filters": (16, 16, 8), "head_hidden": 16}


@pytest.fixture(autouse=True, scope="module")
def _threads(one_thread):
    yield


def quick_net(**kwargs) -> pmc.CellCentroidFormer:
    torch.manual_seed(0)
    return pmc.CellCentroidFormer(**{**QUICK, **kwargs})


# ---------------------------------------------------------------- colormaps

def test_colormap_tables_equal_matplotlib_and_known_colours():
    import matplotlib

    x = np.random.default_rng(0).random((17, 23)).astype(np.float32)
    x[0, :4] = [0.0, 1.0, 0.5, 255.5 / 256]
    for name in pmc.COLORMAPS:
        expected = np.moveaxis(matplotlib.colormaps[name](x)[..., :3], -1, 0)
        assert np.allclose(pmc.colorize(x, name), expected, atol=1e-6), name
        assert torch.allclose(pmc.colorize(torch.from_numpy(x)[None], name), torch.from_numpy(expected).float(),
                              atol=1e-6), name
    # hand-checked ends of the colormaps' definitions
    assert np.allclose(pmc.lookup_table("nipy_spectral")[[0, -1]], [[0, 0, 0], [0.8, 0.8, 0.8]])
    assert np.allclose(pmc.lookup_table("seismic")[0], [0, 0, 0.3])
    assert np.allclose(pmc.lookup_table("rainbow")[0], [0.5, 0, 1])
    with pytest.raises(ValueError, match="colormap must be one of"):
        pmc.lookup_table("jet")


# ---------------------------------------------------------------- masking

def test_padded_mask_geometry_and_ratio():
    rng = np.random.default_rng(0)
    mask = padded_mask(36, 36, rng, patch=12, border=3, prob=1.0)
    # every 18-px cell: its 12 x 12 centre masked, its 3-px border never
    cell = np.zeros((18, 18), dtype=bool)
    cell[3:15, 3:15] = True
    assert np.array_equal(mask, np.tile(cell, (2, 2)))
    assert not padded_mask(36, 36, rng, prob=0.0).any()
    masks = np.stack([padded_mask(36, 36, rng) for _ in range(400)])
    assert not masks[:, [0, 1, 2, 15, 16, 17, 18, 20, 33, 35], :].any()
    # each patch is all or nothing: the count of masked pixels per cell is 0 or 144
    per_cell = masks.reshape(400, 2, 18, 2, 18).sum(axis=(2, 4))
    assert set(np.unique(per_cell)) == {0, 144}
    assert abs(masks.mean() - 0.5 * 144 / 324) < 0.01  # 22.2% of the pixels on average


def test_mae_mask_masks_exactly_the_ratio_of_patches():
    mask = mae_mask(54, 54, np.random.default_rng(1), patch=27, ratio=0.75)
    per_patch = mask.reshape(2, 27, 2, 27).sum(axis=(1, 3))
    assert sorted(per_patch.ravel().tolist()) == [0, 729, 729, 729]


def test_per_sample_masks_differ_and_batch_masks_are_shared():
    image = np.ones((3, 72, 72), dtype=np.float32)  # 16 patches: all-or-none draws are negligible
    masking = RandMaskd("image", scheme="padded")
    masking.set_random_state(seed=0)
    first, second = masking({"image": image})["image"], masking({"image": image})["image"]
    assert not np.array_equal(first, second)
    assert np.array_equal(first[0], first[2])  # one mask for the three slices of a sample
    assert set(np.unique(first)) == {0.0, 1.0}
    batch = BatchMasking("mae", seed=0, patch=9, ratio=0.5)(torch.ones(4, 3, 18, 18))
    assert all(torch.equal(batch[0], batch[k]) for k in range(4))
    assert batch.mean().item() == pytest.approx(0.5)


# ---------------------------------------------------------------- detection targets and decoding

def test_boxes_from_labels_and_size_maps_by_hand():
    labels = np.zeros((64, 64), np.int32)
    labels[10:30, 5:17] = 1
    labels[40:43, 50:52] = 2
    boxes = pmc.labels_to_boxes(labels)
    assert boxes.tolist() == [[5, 10, 12, 20], [50, 40, 2, 3]]
    maps = pmc.size_maps(boxes[:1], (64, 64), size_scale=64)
    # central 50%: rows 10 + 20 // 4 = 15 .. 10 + 30 // 2 = 25, columns 5 + 3 = 8 .. 5 + 9 = 14 (inclusive)
    filled = np.argwhere(maps[0] > 0)
    assert filled.min(0).tolist() == [15, 8] and filled.max(0).tolist() == [25, 14]
    assert np.allclose(maps[0][maps[0] > 0], 20 / 64) and np.allclose(maps[1][maps[1] > 0], 12 / 64)


def test_heatmap_blob_sits_on_the_box_centre():
    heatmap = pmc.box_heatmap(np.array([[20, 10, 21, 31]]), (64, 64))
    assert 0.8 < heatmap.max() <= 1.0 and heatmap.min() == 0.0
    peak = np.argwhere(heatmap == heatmap.max()).mean(0)
    assert np.allclose(peak, [10 + 31 / 2 - 0.5, 20 + 21 / 2 - 0.5], atol=1.0)
    assert not heatmap[:, :10].any() and not heatmap[:, 51:].any()  # the filter reaches one box width at most
    two = pmc.box_heatmap(np.array([[0, 0, 20, 20], [10, 0, 20, 20]]), (32, 40))
    assert two.max() <= 1.0  # overlapping cells are combined by their maximum


def test_decoded_boxes_end_at_the_image_edge():
    """A peak near the corner whose predicted size reaches past the image gives a box cut to the image."""
    maps = np.zeros((3, 32, 48), np.float32)
    maps[0, 1:3, 1:3] = 1.0  # a blob centred at (x, y) = (2, 2) in pixel-centre coordinates
    maps[1:, 1:3, 1:3] = 20 / 96  # 20 x 20 px: from -8 to 12 on both axes
    maps[0, 29:31, 45:47] = 1.0
    maps[1:, 29:31, 45:47] = 20 / 96
    boxes, _ = pmc.decode_boxes(maps, threshold=0.5, size_scale=96)
    assert np.allclose(boxes, [[0, 0, 12, 12], [36, 20, 12, 12]])


def test_decoding_recovers_the_encoded_boxes():
    labels = np.zeros((96, 96), np.int32)
    labels[10:30, 5:17], labels[40:70, 50:91], labels[75:90, 20:35] = 1, 2, 3
    boxes = pmc.labels_to_boxes(labels)
    maps = pmc.targets_from_boxes(boxes, labels.shape, size_scale=96)
    decoded, scores = pmc.decode_boxes(maps, threshold=0.75, size_scale=96)
    assert decoded.shape == (3, 4)
    order = np.argsort(decoded[:, 1])  # skimage lists blobs in raster order
    assert np.abs(decoded[order] - boxes).max() <= 1.0
    assert np.allclose(decoded[order][:, 2:], boxes[:, 2:])  # sizes are read exactly
    assert np.all((scores > 0.75) & (scores <= 1.0))
    assert len(pmc.decode_boxes(maps, threshold=0.99, size_scale=96)[0]) == 0
    transform = pmc.DecodeBoxesd("pred", threshold=0.75, size_scale=96, zoom=2.0)
    out = transform({"pred": torch.from_numpy(maps)})
    assert np.allclose(out["boxes"], decoded / 2) and out["pred"].shape == (3, 96, 96)


def test_box_ap_and_heatmap_miou_by_hand():
    true = np.array([[10.0, 10.0, 20.0, 20.0]])
    assert pmc.box_ap(true, np.array([0.9]), true)["AP"] == pytest.approx(1.0)
    # shifted by 3 px: IoU = 17 * 20 / (400 + 400 - 340) = 0.739 -> matched at 0.50 ... 0.70: 5 of 10 thresholds
    shifted = pmc.box_ap(true + [3, 0, 0, 0], np.array([0.9]), true)
    assert shifted["AP"] == pytest.approx(0.5) and shifted["AP50"] == pytest.approx(1.0)
    assert pmc.box_ap(np.zeros((0, 4)), np.zeros(0), true)["AP"] == pytest.approx(0.0)
    a = np.zeros((10, 10))
    a[2:6, 2:6] = 1
    b = np.zeros((10, 10))
    b[4:6, 2:6] = 1
    # blobs: IoU 8 / 16; background: 84 / 92
    assert pmc.heatmap_miou(a, b) == pytest.approx((8 / 16 + 84 / 92) / 2)


def test_engine_metrics_score_perfect_and_empty_maps():
    labels = np.zeros((1, 64, 64), np.int32)
    labels[0, 5:25, 5:21], labels[0, 35:60, 30:50] = 1, 2
    perfect = pmc.targets_from_boxes(pmc.labels_to_boxes(labels[0]), (64, 64), 64)
    empty = np.zeros_like(perfect)
    ap50 = pmc.BoxAPMetric(size_scale=64, name="AP50")
    miou = pmc.HeatmapIoUMetric()
    assert ap50._scores(perfect, labels) == [pytest.approx(1.0)]
    assert pmc.BoxAPMetric(size_scale=64)._scores(perfect, labels)[0] >= 0.9
    assert ap50._scores(empty, labels) == [0.0]
    assert miou._score(perfect, labels) == pytest.approx(1.0)
    background = (pmc.box_heatmap(pmc.labels_to_boxes(labels[0]), (64, 64)) <= 0.75).mean()
    assert miou._score(empty, labels) == pytest.approx(background / 2)  # blobs IoU 0, background IoU = its share


def test_box_ap_calibrates_the_decoding_threshold_on_validation_maps(tmp_path, caplog):
    """Maps whose peaks under-shoot (0.45, as a network early in training predicts): the paper's 0.75 finds
    nothing, calibration picks the lowest candidate that finds every cell, and the threshold travels with
    the checkpoint to inference."""
    labels = np.zeros((1, 64, 64), np.int32)
    labels[0, 5:25, 5:21], labels[0, 35:60, 30:50] = 1, 2
    maps = pmc.targets_from_boxes(pmc.labels_to_boxes(labels[0]), (64, 64), 64)
    maps[0] *= 0.45 / maps[0].max()
    batch = torch.as_tensor(maps)[None], torch.as_tensor(labels)[None]
    fixed = pmc.BoxAPMetric(threshold=0.75, size_scale=64, name="AP50")
    fixed(*batch)
    assert fixed.aggregate().item() == 0.0 and fixed.threshold == 0.75
    calibrated = pmc.BoxAPMetric(threshold=0.75, size_scale=64, name="AP50", calibrate=[0.2, 0.3, 0.5, 0.75])
    calibrated(*batch)
    assert calibrated.aggregate().item() == pytest.approx(1.0) and calibrated.threshold == 0.2
    # saved with the model under "decoding", read back by inference (the mean over an ensemble)
    for name, value in [("a.pt", 0.2), ("b.pt", 0.4)]:
        calibrated.threshold = value
        torch.save({"model": {}, "decoding": pmc.DecodingThreshold(calibrated).state_dict()}, tmp_path / name)
    assert pmc.saved_threshold([str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]) == pytest.approx(0.3)
    torch.save({"model": {}}, tmp_path / "old.pt")
    assert pmc.saved_threshold([str(tmp_path / "old.pt"), str(tmp_path / "m.onnx")], 0.75) == 0.75
    # a heatmap below every candidate: a warning says no cell can be detected
    calibrated.reset()
    calibrated(torch.zeros_like(batch[0]), batch[1])
    with caplog.at_level(logging.WARNING):
        assert calibrated.aggregate().item() == 0.0
    assert "no cell detected on the validation images" in caplog.text


def test_losses_by_hand():
    target = torch.rand(2, 3, 8, 8)
    # Huber in its quadratic part: 0.5 * 0.1 ** 2 per channel, weighted 1 + 0.5 + 0.5
    assert pmc.CentroidLoss()(target + 0.1, target).item() == pytest.approx(0.01, rel=1e-4)
    heads = torch.cat([torch.full((1, 3, 4, 4), 0.2), torch.full((1, 3, 4, 4), 0.6)], dim=1)
    assert pmc.HeadsLoss(2)(heads, torch.full((1, 3, 4, 4), 0.5)).item() == pytest.approx((0.09 + 0.01) / 2)
    # two pairs of identical, orthogonal views: -log(e^(1/T) / (e^(1/T) + 2 e^0)) per sample
    views = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    t = 0.5
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2))
    assert pmc.ViewsContrastiveLoss(t)(views).item() == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------- network

def test_context_block_views():
    block = pmc.ContextBlock()
    for branch in (block.previous, block.next):
        for layer in branch:
            torch.nn.init.zeros_(layer.weight)
            torch.nn.init.zeros_(layer.bias)
    x = torch.rand(2, 3, 8, 8)
    out = block(x)
    # zero convolutions: sigmoid(0) * S(z) + S(z) = 1.5 S(z) in both context channels, S(z) in the middle
    assert torch.allclose(out[:, 1], x[:, 1]) and torch.allclose(out[:, 0], 1.5 * x[:, 1])
    block = pmc.ContextBlock()
    changed = x.clone()
    changed[:, 2] += 1.0  # S(z+1) feeds only the third view
    a, b = block(x), block(changed)
    assert torch.equal(a[:, :2], b[:, :2]) and not torch.equal(a[:, 2], b[:, 2])


def test_network_outputs_per_stage():
    x = torch.rand(2, 3, 64, 64)
    detector = quick_net().eval()
    with torch.no_grad():
        maps = detector(x)
        assert maps.shape == (2, 3, 64, 64) and 0 < maps.min() and maps.max() < 1
        assert quick_net(out_channels=pmc.pretext_channels("pmc"))(x).shape == (2, 6, 64, 64)
        assert quick_net(out_channels=pmc.pretext_channels("edge"))(x).shape == (2, 2, 64, 64)
        assert quick_net(out_channels=None, projection_dims=(256, 128, 64))(x).shape == (2, 64)
    with pytest.raises(ValueError, match="either out_channels"):
        pmc.CellCentroidFormer(out_channels=None, projection_dims=None)


def test_paper_scale_parts_and_head_share():
    network = pmc.CellCentroidFormer()
    assert network.backbone.out_channels == 160  # EfficientNetV2-S, five stages: stride 16
    assert pmc.CellCentroidFormer(expand_backbone=True).backbone.out_channels == 960  # the authors' cut
    assert 0.15 < pmc.head_fraction(network) < 0.19  # the paper: ~17%


@pytest.mark.parametrize("procedure,frozen,trained", [("head_eval", ("context", "backbone", "neck"), ("heads",)),
                                                      ("backbone_eval", ("context", "backbone"), ("neck", "heads")),
                                                      ("finetune", (), ("context", "backbone", "neck", "heads"))])
def test_procedures_freeze_weights_and_batchnorm_statistics(procedure, frozen, trained):
    network = pmc.apply_procedure(quick_net(), procedure)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    optimizer = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=1e-2)
    network.train()  # engines call train() every iteration: frozen parts must stay in eval mode
    for _ in range(2):
        loss = pmc.CentroidLoss()(network(torch.rand(2, 3, 64, 64)), torch.rand(2, 3, 64, 64))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = network.state_dict()
    for part in frozen:
        assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(part + ".")), part
        assert not any(p.requires_grad for p in getattr(network, part).parameters())
    for part in trained:
        changed = [k for k in before if k.startswith(part + ".") and not torch.equal(before[k], after[k])]
        assert changed, part
    if "backbone" in frozen:  # running statistics of the backbone's BatchNorm layers did not move
        assert all(not m.training for m in network.backbone.modules())


def test_pretext_weights_transfer_into_the_detector(tmp_path):
    pretext = quick_net(out_channels=pmc.pretext_channels("pmc"))
    torch.save({"model": pretext.state_dict()}, tmp_path / "pmc.pt")
    detector = quick_net()
    match = transfer_weights(detector, tmp_path / "pmc.pt")
    # everything but the heads' output layers (RGB -> heatmap; RGB -> height, width)
    assert match.mismatched == ["heads.0.out.bias", "heads.0.out.weight", "heads.1.out.bias", "heads.1.out.weight"]
    assert not match.missing and not match.unexpected
    assert torch.equal(detector.state_dict()["neck.stage1.0.conv_1x1.weight"],
                       pretext.state_dict()["neck.stage1.0.conv_1x1.weight"])
    simclr = quick_net(out_channels=None, projection_dims=(256, 128, 64))
    torch.save(simclr.state_dict(), tmp_path / "simclr.pt")
    match = transfer_weights(quick_net(), tmp_path / "simclr.pt")
    assert all(k.startswith("projection.") for k in match.unexpected) and len(match.unexpected) == 6
    assert match.missing and all(k.startswith("heads.") for k in match.missing)


# ---------------------------------------------------------------- data

@pytest.fixture(scope="module")
def ctc(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("pmc_ctc")
    flat = synthesize("ctc", 4, root / "flat", seed=2, size=(48, 40))
    stacks = synthesize("ctc", 1, root / "stacks", seed=3, size=(48, 40), depth=5)
    return {"flat": flat, "stacks": stacks}


def test_pretext_split_adds_unlabelled_frames_and_maps_slice_names(ctc):
    frames = pmc.read_frames(ctc["flat"])  # gold SEG on t000 and t003
    assert [f["name"] for f in pmc.detection_datalist(ctc["flat"])] == ["01_t000", "01_t003"]
    split = pmc.pretext_split(frames, ["01_t000"], ["01_t003"])
    assert [f["name"] for f in split["train"]] == ["01_t000", "01_t001", "01_t002"]
    assert [f["name"] for f in split["val"]] == ["01_t003"] and "label" not in split["val"][0]
    assert [f["name"] for f in pmc.pretext_split(frames, ["01_t000"], ["01_t003"], include_unlabelled=False)["train"]] \
        == ["01_t000"]
    # a study's pretraining: every frame but the test frames, annotated or not, split by folds
    left = pmc.pretext_split(frames, exclude_items=["01_t003"], val_fold=0)
    assert sorted(f["name"] for f in left["train"] + left["val"]) == ["01_t000", "01_t001", "01_t002"]
    assert left["val"] and left["train"]
    # an annotated-slice item name stands for its frame
    sliced = [{**frames[0], "name": "01_t000_z002", "label_slice": 2}, *frames[1:]]
    assert pmc.pretext_split(sliced, ["01_t000_z002"], ["01_t003"])["train"][0]["name"] == "01_t000"


def test_slices_of_stacks_and_their_context(ctc, tmp_path):
    entry = pmc.detection_datalist(ctc["stacks"])[0]
    stack = pmc.read_stack(entry["image"])
    assert stack.shape == (5, 48, 40) and stack.min() == 0.0 and stack.max() == 1.0
    labelled = pmc.expand_slices([entry], "labelled")
    z_with_cells = [z for z in range(5) if pmc.stack_labels(entry["label"], z).any()]
    assert [i["slice"] for i in labelled] == z_with_cells and {i["group_size"] for i in labelled} == {len(z_with_cells)}
    assert [i["slice"] for i in pmc.expand_slices([entry], "all")] == [0, 1, 2, 3, 4]
    item = pmc.LoadContextd("image", "label")({**entry, "slice": 0})
    assert np.array_equal(item["image"], stack[[0, 0, 1]]) and item["label"].shape == (1, 48, 40)
    top = pmc.LoadContextd("image", None)({"image": entry["image"], "slice": 4})["image"]
    assert np.array_equal(top, stack[[3, 4, 4]])
    # a CTC single-slice mask (man_seg_TTT_ZZZ) gives one item at its slice
    single = {**entry, "label_slice": 3}
    write_tiff(tmp_path / "slice.tif", pmc.stack_labels(entry["label"], 3).astype(np.uint16), "YX")
    single["label"] = str(tmp_path / "slice.tif")
    [item] = pmc.expand_slices([single], "labelled")
    assert item["slice"] == 3 and np.array_equal(pmc.LoadContextd()(item)["label"][0], pmc.stack_labels(entry["label"], 3))
    # 2D frames: three copies; the median filter removes an isolated hot pixel
    frame = pmc.detection_datalist(ctc["flat"])[0]
    image = pmc.LoadContextd("image", None)({"image": frame["image"], "slice": 0})["image"]
    assert np.array_equal(image[0], image[1]) and np.array_equal(image[1], image[2])
    hot = np.zeros((9, 9), np.uint16)
    hot[4, 4], hot[0, 0] = 1000, 10
    write_tiff(tmp_path / "hot.tif", hot, "YX")
    assert pmc.read_stack(tmp_path / "hot.tif").max() == 0.0


def test_pretext_targets_and_views():
    image = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    for pretext, channels in (("pmc", 3), ("colorize", 3), ("autoencode", 1), ("mae_like", 1), ("edge", 1)):
        target = pmc.PretextTargetd("image", pretext=pretext)({"image": image})["target"]
        assert target.shape == (channels, 32, 32), pretext
    assert np.array_equal(pmc.PretextTargetd("image", "pmc", "viridis")({"image": image})["target"],
                          pmc.colorize(image[1:2], "viridis"))
    assert np.array_equal(pmc.PretextTargetd("image", "autoencode")({"image": image})["target"], image[1:2])
    assert pmc.PretextTargetd("image", "edge")({"image": image})["target"].max() == pytest.approx(1.0)
    views = pmc.SimCLRViewsd("image")
    views.set_random_state(seed=0)
    first = views({"image": image})["image"]
    views.set_random_state(seed=0)
    assert first.shape == (2, 3, 32, 32) and torch.equal(first, views({"image": image})["image"])
    assert not torch.equal(first[0], first[1])
    batch = {"image": torch.stack([first, first])}
    inputs, _ = pmc.PretextBatch(views=True)(batch)
    assert inputs.shape == (4, 3, 32, 32) and torch.equal(inputs[0], first[0]) and torch.equal(inputs[2], first[1])


def test_validation_plateau_steps_only_after_validations():
    class State:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    network = torch.nn.Linear(1, 1)
    optimizer = torch.optim.Adam(network.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", patience=0, factor=0.1)
    evaluator = State(state=State(epoch=1, key_metric_name="val_ap", metrics={"val_ap": 0.5}))
    handler = pmc.ValidationPlateau(scheduler, evaluator, print_lr=False, min_iterations=10)
    trainer = State(state=State(epoch=1, iteration=4))
    evaluator.state.metrics["val_ap"] = 0.0
    handler(trainer)  # before min_iterations: a 0 AP is warm-up, not the best so far
    evaluator.state.epoch = trainer.state.epoch = 2
    handler(trainer)  # patience 0 would have cut the rate here
    assert optimizer.param_groups[0]["lr"] == 1.0
    evaluator.state.metrics["val_ap"] = 0.5
    evaluator.state.epoch = trainer.state.epoch = 1
    trainer.state.iteration = 10
    handler(trainer)  # first counted validation: the best so far
    for epoch in (2, 3):  # no validation at these epochs: no step, however stale the metric
        trainer.state.epoch = epoch
        handler(trainer)
    assert optimizer.param_groups[0]["lr"] == 1.0
    evaluator.state.epoch = 3  # a validation without improvement: patience 0 -> the rate drops
    handler(trainer)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


# ---------------------------------------------------------------- outputs

def test_box_coco_round_trip(tmp_path):
    annotations = boxes_to_coco(np.array([[1.5, 2.0, 3.0, 4.0]]), image_id=7, scores=[0.8], start_ann_id=5)
    assert annotations == [{"id": 5, "image_id": 7, "category_id": 1, "bbox": [1.5, 2.0, 3.0, 4.0], "area": 12.0,
                            "iscrowd": 0, "score": 0.8}]
    path = write_coco_json(tmp_path / "boxes.json", [{"id": 7, "height": 10, "width": 10}], annotations)
    assert load_coco_json(path)["annotations"] == annotations


def test_box_outputs_collect_the_slices_of_a_stack(tmp_path):
    saver = SaveBoxOutputsd("pred", tmp_path, image_key="raw", path_key="image_path")
    image = np.zeros((3, 20, 24), np.float32)
    image[1] = np.linspace(0, 1, 24)
    for z, n in ((0, 1), (1, 0), (2, 2)):
        boxes = np.array([[2.0 + k, 3.0, 5.0, 6.0] for k in range(n)]).reshape(-1, 4)
        saver({"pred": None, "raw": torch.from_numpy(image), "name": "stack", "image_path": "/x/stack.tif",
               "slice": z, "n_slices": 3, "group_size": 3, "boxes": boxes, "scores": np.full(n, 0.9)})
        written = (tmp_path / "coco" / "stack.json").is_file()
        assert written == (z == 2)  # written once, when the last slice has passed
    document = load_coco_json(tmp_path / "coco" / "stack.json")
    assert [im["slice"] for im in document["images"]] == [0, 1, 2]
    assert [a["image_id"] for a in document["annotations"]] == [1, 3, 3]
    with open(tmp_path / "measurements" / "stack_cells.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["centroid_z"]) for r in rows] == [0, 2, 2]
    assert float(rows[0]["centroid_x"]) == pytest.approx(4.5) and float(rows[0]["bbox_max_y"]) == pytest.approx(9.0)
    assert sorted(p.name for p in (tmp_path / "overlays").iterdir()) == [f"stack_z00{z}_overlay.png" for z in range(3)]
    rgb = draw_boxes(image[1], np.array([[2.0, 3.0, 5.0, 6.0]]))
    # the box covers rows 3-8, columns 2-6; its outline runs just outside them
    assert rgb[2, 1].tolist() == [255, 255, 0] and rgb[9, 7].tolist() == [255, 255, 0] and rgb[5, 7].tolist() == [255, 255, 0]
    assert rgb[3, 2].tolist() != [255, 255, 0] and rgb[5, 4].tolist() != [255, 255, 0]


def test_detection_report_scores_written_boxes(tmp_path, ctc):
    items = pmc.expand_slices(pmc.detection_datalist(ctc["flat"]), "labelled")
    for item in items:  # predictions = the true boxes; one, scored lowest, shifted by half its width (IoU 1/3)
        boxes = pmc.labels_to_boxes(pmc.stack_labels(item["label"], 0))
        scores = np.full(len(boxes), 0.9)
        if item["name"] == "01_t003":
            boxes[0, 0] += boxes[0, 2] / 2
            scores[0] = 0.1
        write_coco_json(tmp_path / "coco" / f"{item['name']}.json", [{"id": 1, "height": 48, "width": 40}],
                        boxes_to_coco(boxes, 1, scores=scores))
    report = pmc.detection_report(items, tmp_path, tmp_path / "metrics.json", heatmap_miou=0.5)
    n_cells = sum(len(pmc.labels_to_boxes(pmc.stack_labels(i["label"], 0))) for i in items)
    assert report["n_images"] == 2 and report["n_cells"] == report["n_detections"] == n_cells
    # precision 1 up to recall (n - 1) / n, nothing beyond: the share of COCO's 101 recall points reached
    reached = np.mean(np.linspace(0, 1, 101) <= (n_cells - 1) / n_cells + 1e-9)
    assert report["ap50"] == pytest.approx(reached)
    assert report["ap_large"] is None and report["heatmap_miou"] == 0.5
    assert json.loads((tmp_path / "metrics.json").read_text()) == report


# ---------------------------------------------------------------- paper scale

@pytest.mark.slow
def test_paper_scale_config_verifies_and_takes_a_training_step(tmp_path):
    """The paper-scale network (384-px config, EfficientNetV2-S) passes MONAI's verify_net_in_out and one
    training step of train.yaml on the CPU (at 64-px crops, so the step stays small)."""
    from cellzoo.bundles import bundle_path, config_files
    from monai.bundle import ConfigWorkflow

    folder = bundle_path("pmc_detection") / "configs"
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def", "--meta_file",
         str(folder / "metadata.json"), "--config_file", repr(config_files("pmc_detection", "inference")), "--n", "2"],
        capture_output=True, text=True, check=False)
    assert "data shape of network is verified with no error" in result.stdout + result.stderr, result.stderr[-2000:]
    data = synthesize("ctc", 4, tmp_path / "data", seed=4, size=(64, 64))
    flow = ConfigWorkflow(config_file=config_files("pmc_detection", "train"), meta_file=str(folder / "metadata.json"),
                          workflow_type="train", bundle_root=str(tmp_path), dataset_dir=str(data),
                          output_dir=str(tmp_path / "runs"), ckpt_dir=str(tmp_path / "models"), roi_size=64,
                          batch_size=1, samples_per_epoch=1, max_epochs=1, n_folds=2, num_workers=0)
    flow.initialize()
    network = flow.parser.get_parsed_content("network_def")
    assert sum(p.numel() for p in network.parameters()) > 13e6  # EfficientNetV2-S to stride 16, neck, heads
    before = {k: v.clone() for k, v in network.state_dict().items()}
    flow.run()
    assert flow.parser.get_parsed_content("train#trainer").state.iteration == 1
    assert any(not torch.equal(before[k], v) for k, v in network.state_dict().items())
    assert (tmp_path / "models" / "model.pt").is_file()
    flow.finalize()
