"""CUPre's components: the cascade (stage thresholds, chained refinement, averaged scores), masks and COCO results,
AP against known answers, COCO/LIVECell data, fractions and AMT2 parts, MoCo (InfoNCE, momentum, queue), L2-SP,
the AMT2 round order, tiled inference merging cells across tiles, the synthetic objects layout, pretraining
chains in the study engine, and the paper-scale ResNeSt-200 cascade (one CPU training step, slow)."""

from __future__ import annotations

import logging

import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from cellzoo.engines.contrastive import (
    InfoNCELoss,
    MoCo,
    PooledEncoder,
    PrepareTwoViews,
    TwoViewsd,
    info_nce_logits,
    moco_view_transforms,
)
from cellzoo.errors import InputError
from cellzoo.io import coco_to_label_image, label_image_to_coco, write_png, write_tiff
from cellzoo.methods.cupre import (
    AMT2Trainer,
    CascadeRoIHeads,
    CocoMasksd,
    DetectionAPMetric,
    L2SP,
    MasksToTargetd,
    PartSampler,
    TiledDetectionInferer,
    cascade_mask_rcnn,
    cell_images,
    coco_items,
    detection_train_transforms,
    detections_to_coco,
    detections_to_labels,
    few_shot_split,
    labels_to_coco_folder,
    masks_to_boxes,
    paste_masks,
    take_fraction,
    write_detection_report,
)
from cellzoo.synthetic import synthesize
from cellzoo.synthetic.objects import OBJECT_CATEGORIES, render_objects

QUICK = dict(backbone="resnet18", fpn_channels=16, gn_groups=4, backbone_kwargs=dict(channels=(8, 16, 32, 64), stem_width=8),
             representation=16, mask_layers=(8,), rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50,
             rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50, rpn_batch_size_per_image=32,
             box_batch_size_per_image=32, detections_per_img=30)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors on 2 shared cores: one thread (conftest)."""


def square_target(size=64, squares=((8, 8, 20), (30, 36, 16))):
    """A (3, H, W) image with bright squares and their detector target: boxes, labels, masks."""
    image = torch.zeros(3, size, size)
    masks = torch.zeros(len(squares), size, size, dtype=torch.uint8)
    for i, (y, x, side) in enumerate(squares):
        image[:, y:y + side, x:x + side] = 1.0
        masks[i, y:y + side, x:x + side] = 1
    boxes = torch.as_tensor(masks_to_boxes(masks.numpy()))
    return image, {"boxes": boxes, "labels": torch.ones(len(squares), dtype=torch.int64), "masks": masks}


# ---------------------------------------------------------------- the cascade

def test_cascade_stages_follow_the_paper():
    heads = cascade_mask_rcnn(num_classes=3, **QUICK).roi_heads
    assert [s.iou for s in heads.stages] == [0.5, 0.6, 0.7]
    assert [s.box_coder.weights for s in heads.stages] == [(10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15)]
    # class-agnostic boxes: 4 deltas per RoI, whatever the class count
    assert [tuple(s.predictor.bbox_pred.weight.shape) for s in heads.stages] == [(4, 16)] * 3
    assert heads.stages[0].predictor.cls_score.out_features == 3 and heads.detections_per_img == 30


def test_stage_labels_use_each_stages_threshold():
    """A proposal with IoU 0.65 to its cell is positive for stages 1-2 (0.5, 0.6), background for stage 3 (0.7)."""
    heads = cascade_mask_rcnn(num_classes=2, **QUICK).roi_heads
    gt = torch.tensor([[0.0, 0.0, 20.0, 20.0]])
    proposal = torch.tensor([[0.0, 0.0, 20.0, 20.0 / 0.65]])  # IoU = 400 / (400 / 0.65) = 0.65
    target = [{"boxes": gt, "labels": torch.tensor([1])}]
    labels = [heads._label(stage, [proposal], target)[1][0].item() for stage in heads.stages]
    assert labels == [1, 1, 0]


def _fixed_heads(stage_biases, stage_deltas):
    """Cascade heads whose stages ignore their input: class logits `stage_biases[k]`, box deltas `stage_deltas[k]`."""
    heads = CascadeRoIHeads(out_channels=4, num_classes=2, representation=4, mask_layers=(4,), featmap_names=("0",),
                            score_thresh=0.0, nms_thresh=1.0)
    with torch.no_grad():
        for stage, bias, delta in zip(heads.stages, stage_biases, stage_deltas):
            stage.predictor.cls_score.weight.zero_()
            stage.predictor.cls_score.bias.copy_(torch.tensor(bias))
            stage.predictor.bbox_pred.weight.zero_()
            stage.predictor.bbox_pred.bias.copy_(torch.tensor(delta))
    return heads.eval()


def test_each_stage_refines_the_previous_stages_boxes_and_scores_are_averaged():
    # every stage moves a box right by 0.1 of its width (delta = 0.1 x the stage's x weight)
    biases = [[0.0, 1.0], [0.0, 2.0], [0.0, -1.0]]
    heads = _fixed_heads(biases, [[1.0, 0, 0, 0], [2.0, 0, 0, 0], [3.0, 0, 0, 0]])
    features = {"0": torch.rand(1, 4, 32, 32)}
    proposals = [torch.tensor([[10.0, 10.0, 20.0, 20.0]])]
    result, losses = heads(features, proposals, [(128, 128)])
    assert losses == {}
    # chained: 10 -> 11 -> 12 -> 13 (each stage's input is the previous stage's output), width stays 10
    assert torch.allclose(result[0]["boxes"], torch.tensor([[13.0, 10.0, 23.0, 20.0]]), atol=1e-4)
    expected = np.mean([math.exp(b[1]) / (math.exp(b[0]) + math.exp(b[1])) for b in biases])
    assert result[0]["scores"].item() == pytest.approx(expected, abs=1e-6)
    assert result[0]["labels"].tolist() == [1] and tuple(result[0]["mask_probs"].shape) == (1, 1, 28, 28)


def test_training_losses_and_gradients_reach_every_part():
    torch.manual_seed(0)
    net = cascade_mask_rcnn(num_classes=2, **QUICK)
    image, target = square_target()
    losses = net([image, image.flip(-1)], [target, {**target, "masks": target["masks"].flip(-1),
                                                    "boxes": torch.as_tensor(masks_to_boxes(target["masks"].flip(-1).numpy()))}])
    expected = {f"loss_{kind}_stage{k}" for kind in ("classifier", "box_reg") for k in range(3)}
    assert set(losses) == expected | {"loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    unused = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []


def test_eval_output_is_a_detection_set_per_image():
    torch.manual_seed(0)
    net = cascade_mask_rcnn(num_classes=2, **QUICK).eval()
    with torch.no_grad():
        out = net([torch.rand(3, 64, 96), torch.rand(3, 40, 40)])
    assert len(out) == 2
    for det, (h, w) in zip(out, [(64, 96), (40, 40)]):
        n = len(det["boxes"])
        assert n <= 30 and det["scores"].shape == (n,) and det["mask_probs"].shape == (n, 1, 28, 28)
        assert bool((det["boxes"][:, 2] <= w).all() and (det["boxes"][:, 3] <= h).all())  # clipped to the image


# ---------------------------------------------------------------- masks and COCO results

def test_paste_masks_matches_torchvision():
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    torch.manual_seed(0)
    probs = torch.rand(3, 1, 28, 28)
    boxes = torch.tensor([[5.3, 7.1, 30.8, 22.4], [0.0, 0.0, 12.0, 40.0], [50.0, 50.0, 70.0, 63.0]])
    pasted = paste_masks(probs, boxes, (64, 64), threshold=0.5)
    reference = paste_masks_in_image(probs, boxes, (64, 64), padding=1)[:, 0] >= 0.5
    for (y0, x0, crop), full in zip(pasted, reference):
        mine = np.zeros((64, 64), dtype=bool)
        mine[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
        assert np.array_equal(mine, full.numpy())


def _two_squares():
    """Two overlapping full-box detections: the second (score 0.9) covers the first's right half."""
    return {"boxes": torch.tensor([[10.0, 10.0, 29.0, 29.0], [20.0, 10.0, 39.0, 29.0]]),
            "scores": torch.tensor([0.5, 0.9]), "labels": torch.tensor([1, 1]),
            "mask_probs": torch.ones(2, 1, 28, 28)}


def test_label_image_gives_overlaps_to_the_more_confident_cell():
    labels, scores = detections_to_labels(_two_squares(), (48, 48))
    assert scores == pytest.approx({1: 0.9, 2: 0.5})  # labels numbered by decreasing score
    instances = paste_masks(torch.ones(2, 1, 28, 28), _two_squares()["boxes"], (48, 48))
    first = np.zeros((48, 48), bool)
    y0, x0, crop = instances[0]
    first[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
    second = np.zeros((48, 48), bool)
    y0, x0, crop = instances[1]
    second[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
    assert np.array_equal(labels == 1, second) and np.array_equal(labels == 2, first & ~second)
    small, _ = detections_to_labels(_two_squares(), (48, 48), min_size=int((first & ~second).sum()) + 1)
    assert small.max() == 1  # the cell left with too few pixels is dropped


def test_coco_results_keep_overlaps_and_boxes():
    from pycocotools import mask as mask_utils

    records = detections_to_coco(_two_squares(), (48, 48), image_id=7, category_ids=[3])
    assert [r["category_id"] for r in records] == [3, 3] and [r["image_id"] for r in records] == [7, 7]
    assert records[1]["bbox"] == [20.0, 10.0, 19.0, 19.0] and records[1]["score"] == pytest.approx(0.9)
    decoded = [mask_utils.decode({**r["segmentation"], "counts": r["segmentation"]["counts"].encode()}) for r in records]
    assert (decoded[0] & decoded[1]).sum() > 0  # the overlap is kept in both masks
    assert [int(d.sum()) for d in decoded] == [r["area"] for r in records]


# ---------------------------------------------------------------- AP

def _labels_with_cells(seed=0, size=(64, 64), n=6):
    rng = np.random.default_rng(seed)
    labels = np.zeros(size, dtype=np.uint16)
    for k in range(1, n + 1):
        y, x = rng.integers(0, size[0] - 12), rng.integers(0, size[1] - 12)
        labels[y:y + int(rng.integers(5, 12)), x:x + int(rng.integers(5, 12))] = k
    return labels


def test_ap_metric_is_one_for_the_truth_and_drops_with_misses():
    labels = _labels_with_cells()
    gt = {"annotations": label_image_to_coco(labels, 1), "height": 64, "width": 64}
    boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in gt["annotations"]], dtype=torch.float32)
    perfect = {"boxes": boxes, "scores": torch.linspace(0.9, 0.5, len(boxes)), "labels": torch.ones(len(boxes), dtype=torch.int64),
               "mask_probs": torch.ones(len(boxes), 1, 28, 28)}
    metric = DetectionAPMetric(iou_type="bbox")
    metric.reset()
    metric.update(([perfect], [gt]))
    assert metric.compute() == pytest.approx(1.0)
    half = {k: v[: len(boxes) // 2] for k, v in perfect.items()}
    metric.reset()
    metric.update(([half], [gt]))
    # precision 1 up to recall 0.5, nothing after: 51 of COCO's 101 recall points
    assert metric.compute() == pytest.approx(51 / 101, abs=1e-6)


def test_detection_report_scores_both_protocols(tmp_path):
    labels = _labels_with_cells(1)
    image = tmp_path / "img.tif"
    write_tiff(image, (labels > 0).astype(np.uint8) * 200, "YX")
    truth = label_image_to_coco(labels, 1)
    predicted = [{**a, "score": 1.0 - 0.01 * i} for i, a in enumerate(label_image_to_coco(labels, 1, segmentation="rle"))]
    (tmp_path / "pred" / "coco").mkdir(parents=True)
    (tmp_path / "pred" / "coco" / "img.json").write_text(json.dumps(
        {"images": [{"id": 1, "height": 64, "width": 64}], "annotations": predicted, "categories": [{"id": 1}]}))
    write_tiff(tmp_path / "pred" / "labels" / "img_label.tiff", np.where(labels <= 3, labels, 0), "YX")  # 3 of 6 cells
    report = write_detection_report(tmp_path / "pred", [{"image": str(image), "annotations": truth, "height": 64,
                                                        "width": 64}], tmp_path / "metrics.json")
    for key in ("bbox_AP", "segm_AP", "coco_bbox_AP", "coco_segm_AP", "bbox_AP50", "segm_AR"):
        assert report[key] == pytest.approx(1.0), key
    # F1 at IoU 0.5 of the label image: 3 true positives, 3 missed cells
    assert report["f1"] == pytest.approx(2 / 3) and report["precision"] == 1.0 and report["recall"] == 0.5
    assert json.loads((tmp_path / "metrics.json").read_text())["n_objects"] == 6


# ---------------------------------------------------------------- data

def _coco_folder(root: Path, dict_annotations: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(1, 4):
        labels = _labels_with_cells(i)
        write_png(root / f"im{i}.png", (labels > 0).astype(np.uint8) * 255)
        images.append({"id": i, "file_name": f"im{i}.png", "height": 64, "width": 64})
        if i < 3:  # im3 is unlabelled
            annotations += label_image_to_coco(labels, i, start_ann_id=len(annotations) + 1)
    if dict_annotations:  # LIVECell stores {id: annotation}
        annotations = {str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in annotations}
    (root / "train.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    return root


def test_coco_items_read_livecell_dicts_and_check_files(tmp_path):
    folder = _coco_folder(tmp_path / "a", dict_annotations=True)
    items = coco_items(folder)
    assert [e["name"] for e in items] == ["im1", "im2", "im3"] and len(items[2]["annotations"]) == 0
    assert [e["name"] for e in cell_images(folder, exclude_items=["im2"])] == ["im1", "im3"]
    (folder / "other.json").write_text((folder / "train.json").read_text())
    with pytest.raises(InputError, match="listed in"):
        coco_items(folder)
    assert len(coco_items(folder, "train.json")) == 3
    doc = json.loads((folder / "train.json").read_text())
    doc["images"][0]["height"] = 65
    (folder / "train.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="64x64 but its COCO record says 65x64"):
        coco_items(folder, "train.json")


def test_fractions_are_seeded_and_study_items_win():
    entries = [{"name": f"i{k:02d}", "fold": k % 5} for k in range(40)]
    five = take_fraction(entries, 0.05, seed=3)
    assert len(five) == 2 and five == take_fraction(entries, 0.05, seed=3) != take_fraction(entries, 0.05, seed=4)
    assert len(take_fraction(entries, 0.2)) == 8 and take_fraction(entries, None) == entries
    split = few_shot_split(entries, train_fraction=0.25)
    assert len(split["train"]) == 8 and len(split["val"]) == 8  # a quarter of the 32 training-fold items
    named = few_shot_split(entries, train_items=["i01", "i02", "i03"], val_items=["i01"], train_fraction=0.05)
    assert [e["name"] for e in named["train"]] == ["i01", "i02", "i03"]  # a study's items are not thinned


def test_part_sampler_splits_coco_into_disjoint_parts():
    sampler = PartSampler(10, 3, seed=1)
    assert sorted(np.concatenate(sampler.parts).tolist()) == list(range(10))
    seen = []
    for k in range(3):
        sampler.set_part(k)
        drawn = list(sampler)
        assert len(drawn) == len(sampler) == 4 and set(drawn) <= set(sampler.parts[k].tolist())
        seen.append(set(drawn))
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2])
    sampler.set_part(4)  # round 5 of 3 parts: part 2 again
    assert sampler.part == 1


def test_cell_images_from_ctc_and_cellseg_layouts(tmp_path):
    ctc = synthesize("ctc", 4, tmp_path / "ctc", seed=0, size=(32, 32))
    assert [e["name"] for e in cell_images(ctc)] == ["01/t000", "01/t001", "01/t002", "01/t003"]
    cellseg = synthesize("cellseg", 2, tmp_path / "cs", seed=0, size=(32, 32))
    assert [e["name"] for e in cell_images(cellseg)] == ["cell_00001", "cell_00002"]


def test_label_folders_convert_to_coco_and_back(tmp_path):
    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
    originals = {}
    for t in (3, 7):
        labels = _labels_with_cells(t).astype(np.uint16) * 3  # CTC ids need not be consecutive
        write_tiff(tmp_path / "images" / f"t{t:03d}.tif", (labels > 0).astype(np.uint16) * 900, "YX")
        write_tiff(tmp_path / "labels" / f"man_seg{t:03d}.tif", labels, "YX")
        originals[f"t{t:03d}"] = labels
    out = labels_to_coco_folder(tmp_path / "images", tmp_path / "labels", tmp_path / "coco")
    items = coco_items(out)
    assert [e["name"] for e in items] == ["t003", "t007"]
    for entry in items:
        back = coco_to_label_image(entry["annotations"], 64, 64, id_key="label")
        assert np.array_equal(back, originals[entry["name"]])


def test_training_chain_moves_masks_with_the_image():
    labels = _labels_with_cells(2, size=(80, 80))
    annotations = label_image_to_coco(labels, 1)
    masks = CocoMasksd("annotations", merge_categories=True)({"annotations": annotations, "height": 80, "width": 80})
    assert np.array_equal(masks["masks"].argmax(0) + masks["masks"].any(0), (labels > 0) * (labels.astype(int)))
    target = MasksToTargetd("masks", min_area=30)({"masks": masks["masks"], "classes": masks["classes"]})
    areas = masks["masks"].reshape(len(masks["masks"]), -1).sum(1)
    assert len(target["boxes"]) == int((areas >= 30).sum())
    chain = detection_train_transforms(roi_size=48, merge_categories=True)
    chain.set_random_state(5)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.tif"
        write_tiff(path, labels.astype(np.uint16), "YX")  # the image is its own label map
        for _ in range(4):
            out = chain({"image": str(path), "annotations": annotations, "height": 80, "width": 80})
            image = out["image"][0].numpy()
            for mask, box in zip(out["masks"].numpy(), out["boxes"].numpy()):
                values = np.unique(image[mask > 0])
                assert len(values) == 1 and values[0] > 0  # each mask still covers exactly one cell
                ys, xs = np.where(mask)
                assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


# ---------------------------------------------------------------- MoCo and L2-SP

def test_info_nce_by_hand():
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=1)
    k = torch.nn.functional.normalize(torch.tensor([[1.0, 1.0], [0.0, 1.0]]), dim=1)
    negatives = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), dim=0)
    logits = info_nce_logits(q, k, negatives, temperature=0.5)
    assert torch.allclose(logits[0], torch.tensor([math.sqrt(0.5), 1.0, 0.0, -1.0]) / 0.5)
    assert torch.allclose(logits[1], torch.tensor([0.8, 0.6, 0.8, -0.6]) / 0.5)
    expected = -torch.log_softmax(logits, 1)[:, 0].mean()
    assert InfoNCELoss()(logits).item() == pytest.approx(expected.item())


def _tiny_encoder():
    return PooledEncoder(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))


def test_moco_momentum_queue_and_in_place_training():
    torch.manual_seed(0)
    encoder = _tiny_encoder()
    moco = MoCo(encoder, feature_dim=4, dim=3, hidden_dim=5, queue_size=5, momentum=0.9, temperature=0.2)
    assert moco.encoder_q[0] is encoder  # the caller's module itself is trained
    with torch.no_grad():
        for p in moco.encoder_q.parameters():
            p.add_(1.0)  # query moves away from the key copy
    before_k = [p.clone() for p in moco.encoder_k.parameters()]
    q_params = [p.clone() for p in moco.encoder_q.parameters()]
    x = torch.rand(2, 3, 8, 8)
    logits = moco(x, x)
    assert logits.shape == (2, 6)
    for k, k0, q in zip(moco.encoder_k.parameters(), before_k, q_params):
        assert torch.allclose(k, 0.9 * k0 + 0.1 * q)
    assert moco.queue_ptr.item() == 2
    with torch.no_grad():
        keys = torch.nn.functional.normalize(moco.encoder_k(x), dim=1)
    assert torch.allclose(moco.queue[:, :2].T, keys, atol=1e-6)
    moco(torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8))
    assert moco.queue_ptr.item() == 1  # 2 + 4 wraps around a queue of 5
    optimizer = torch.optim.SGD([p for p in moco.parameters() if p.requires_grad], lr=0.1)
    before = encoder.module[0].weight.clone()
    InfoNCELoss()(moco(x, x.flip(-1))).backward()
    assert all(p.grad is None for p in moco.encoder_k.parameters())
    optimizer.step()
    assert not torch.equal(before, encoder.module[0].weight)
    moco.sync_key_encoder()
    assert all(torch.equal(a, b) for a, b in zip(moco.encoder_q.parameters(), moco.encoder_k.parameters()))


def test_two_views_differ_and_prepare_for_moco():
    views = TwoViewsd("image", moco_view_transforms("image", view_size=16, context_size=32))
    views.set_random_state(0)
    out = views({"image": torch.rand(3, 40, 50)})
    assert out["image_q"].shape == out["image_k"].shape == (3, 16, 16)
    assert not torch.equal(torch.as_tensor(out["image_q"]), torch.as_tensor(out["image_k"]))
    q, target, args, kwargs = PrepareTwoViews()({"image_q": torch.zeros(2, 3, 4, 4), "image_k": torch.ones(2, 3, 4, 4)})
    assert target is None and torch.equal(args[0], torch.ones(2, 3, 4, 4)) and kwargs == {}


def test_l2sp_by_hand_and_reference_reset():
    module = nn.Linear(2, 1)
    with torch.no_grad():
        module.weight.copy_(torch.tensor([[1.0, 2.0]]))
        module.bias.fill_(0.5)
    penalty = L2SP(module, alpha=0.8, weight=0.1)
    with torch.no_grad():
        module.weight.add_(torch.tensor([[1.0, -1.0]]))  # w - w0 = (1, -1, 0)
    # 0.1 * (0.8 * 2 + 0.2 * (4 + 1 + 0.25))
    assert penalty().item() == pytest.approx(0.1 * (0.8 * 2.0 + 0.2 * 5.25))
    penalty().backward()
    assert torch.allclose(module.weight.grad, 0.1 * (2 * 0.8 * torch.tensor([[1.0, -1.0]]) + 2 * 0.2 * module.weight.detach()))
    penalty.reset_reference()
    assert penalty().item() == pytest.approx(0.1 * 0.2 * 5.25)
    assert list(penalty.parameters()) == list(penalty.reference.parameters())  # the live module is not its child


def test_amt2_rounds_alternate_moco_reference_and_parts():
    calls = []

    class Stub:
        def __init__(self, name):
            self.name, self.state = name, SimpleNamespace(mean_loss=1.0)
            self.handlers = []

        def add_event_handler(self, *args):
            pass

        def run(self):
            calls.append(self.name)

    class Reference:
        def reset_reference(self):
            calls.append("reset")

    sampler = PartSampler(9, 3)
    original = sampler.set_part
    sampler.set_part = lambda k: (calls.append(f"part{k}"), original(k))
    trainer = AMT2Trainer(Stub("moco"), Stub("coco"), sampler, max_epochs=3, l2sp=Reference())
    trainer.run()
    assert calls == ["moco", "reset", "part0", "coco", "moco", "reset", "part1", "coco", "moco", "reset", "part2", "coco"]
    assert trainer.state.epoch == 3 and trainer.state.output[0]["round"] == 3
    calls.clear()
    AMT2Trainer(Stub("moco"), None, None, max_epochs=2).run()
    assert calls == ["moco", "moco"]  # Cells-MoCo: the backbone alone


# ---------------------------------------------------------------- tiled inference

class SquareFinder(nn.Module):
    """A stand-in detector: every connected bright region of a tile, box exact, score 1, full mask."""

    def forward(self, images):
        from scipy import ndimage

        out = []
        for image in images:
            labels, _ = ndimage.label(image[0].numpy() > 0.5)
            boxes = [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(labels)]
            boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
            out.append({"boxes": boxes, "scores": torch.ones(len(boxes)), "labels": torch.ones(len(boxes), dtype=torch.int64),
                        "mask_probs": torch.ones(len(boxes), 1, 28, 28)})
        return out


def test_tiles_merge_each_cell_once_with_its_whole_box():
    image = torch.zeros(1, 200, 230)
    squares = [(5, 5, 12), (60, 58, 14), (90, 120, 20), (150, 180, 16), (185, 10, 12), (30, 100, 10)]
    for y, x, side in squares:  # several cross tile cores (cores of 64 px with these settings)
        image[:, y:y + side, x:x + side] = 1
    inferer = TiledDetectionInferer(tile_size=96, overlap=32, batch_size=3)
    assert len(inferer.tiles((200, 230))) > 9
    found = inferer([image], SquareFinder())[0]
    got = sorted(found["boxes"].round().int().tolist())
    assert got == sorted([[x, y, x + side, y + side] for y, x, side in squares])
    whole = TiledDetectionInferer(tile_size=256)([image], SquareFinder())[0]
    assert sorted(whole["boxes"].round().int().tolist()) == got  # one tile: the same cells


def test_image_cap_follows_the_tiling_and_a_capped_tile_is_warned(caplog):
    """A detector capped at 3 per forward pass: an image of 4 tiles keeps up to 12 (not 3), and every tile
    that reached the cap is named in a warning (cells beyond it are lost)."""

    class Capped(SquareFinder):
        def forward(self, images):
            return [{k: v[:3] for k, v in out.items()} for out in super().forward(images)]

    image = torch.zeros(1, 128, 128)
    for y in (4, 34, 68, 98):  # four squares in each quadrant: 16 cells, 4 per 64-px core
        for x in (4, 34, 68, 98):
            image[:, y:y + 10, x:x + 10] = 1
    inferer = TiledDetectionInferer(tile_size=72, overlap=8, tile_cap=3)
    assert len(inferer.tiles((128, 128))) == 4 and inferer.image_cap(4) == 12
    with caplog.at_level(logging.WARNING):
        found = inferer([image], Capped())[0]
    assert len(found["boxes"]) == 12  # 3 kept in each of the 4 tiles, not 3 for the whole image
    assert caplog.text.count("the detector's cap") == 4
    # uncapped, all 16 are found and nothing is warned about
    caplog.clear()
    assert len(TiledDetectionInferer(tile_size=72, overlap=8, tile_cap=100)([image], SquareFinder())[0]["boxes"]) == 16
    assert "cap" not in caplog.text


# ---------------------------------------------------------------- synthetic natural images

def test_objects_layout_is_coco_with_exact_masks(tmp_path):
    out = synthesize("objects", 5, tmp_path / "obj", seed=3, size=(96, 96))
    docs = [json.loads((out / f"coco_{p}.json").read_text()) for p in ("train", "val", "test")]
    assert [len(d["images"]) for d in docs] == [3, 1, 1]
    assert [c["name"] for c in docs[0]["categories"]] == list(OBJECT_CATEGORIES)
    from cellzoo.synthetic.splits import child_seed

    image = docs[0]["images"][1]
    _, labels, categories = render_objects((96, 96), child_seed(3, image["id"]))
    anns = [a for a in docs[0]["annotations"] if a["image_id"] == image["id"]]
    assert len(anns) == len(categories) > 0
    back = coco_to_label_image(anns, 96, 96, id_key="label")
    assert np.array_equal(back, labels)
    assert {a["category_id"] for d in docs for a in d["annotations"]} <= {1, 2, 3, 4}


def test_objects_is_registered_apart_from_the_microscopy_layouts():
    from cellzoo.synthetic import LAYOUTS, layout_options
    from cellzoo.synthetic.layouts import OTHER_LAYOUTS

    assert OTHER_LAYOUTS == ("objects",) and "objects" not in LAYOUTS
    assert layout_options("objects") == ("n_objects", "radius", "split")
    with pytest.raises(InputError, match="objects"):  # the error names it among the choices
        layout_options("shapes")


# ---------------------------------------------------------------- the study declares CUPre's chain

def test_study_runs_coco_pretraining_before_amt2(tmp_path, monkeypatch):
    from cellzoo.studies import engine, run_study

    calls = []

    def record(bundle, config, quick=False, **overrides):
        calls.append((config, overrides))
        folder = Path(overrides.get("ckpt_dir") or overrides["output_dir"])
        folder.mkdir(parents=True, exist_ok=True)
        if "checkpoints" in overrides:
            (folder / "metrics.json").write_text(json.dumps({"bbox_AP": 0.5, "segm_AP": 0.4}))
        else:
            (folder / "model.pt").write_text("{}")

    cells = synthesize("coco", 12, tmp_path / "cells", seed=1, size=(48, 48))
    monkeypatch.setattr(engine, "run_config", record)
    rows = run_study("cupre_instance_seg", cells, [0.2], seeds=[0], out=tmp_path / "study",
                     pretrain_data=tmp_path / "objects", n_test=2)
    pretrain = [(c, o) for c, o in calls if c.startswith("pretrain")]
    assert [c for c, _ in pretrain] == ["pretrain_moco", "pretrain_coco", "pretrain_amt2"]
    coco, amt2 = pretrain[1][1], pretrain[2][1]
    assert amt2["init_ckpt"] == str(Path(coco["ckpt_dir"]) / "model.pt")
    assert amt2["coco_dir"] == str(tmp_path / "objects") and amt2["dataset_dir"] == str(cells)
    assert coco["dataset_dir"] == str(tmp_path / "objects") and "exclude_items" not in coco
    inits = {Path(o["ckpt_dir"]).parent.name: o["init_ckpt"] for c, o in calls if c == "train"}
    assert inits["scratch"] is None and inits["cupre"] == inits["cupre++"] == amt2["ckpt_dir"] + "/model.pt"
    assert [o.get("l2sp_weight") for c, o in calls if c == "train" and "cupre++" in o["ckpt_dir"]] == [1.0e-3]
    assert {r["arm"] for r in rows} == {"scratch", "moco", "coco", "cupre", "cupre++"}


def test_pretraining_chains_must_end():
    from cellzoo.studies.spec import _parse

    raw = {"tasks": {"t": {"metric": "ap", "finetune": {"config": "train"}, "evaluate": {"config": "evaluate"},
                           "pretrainings": {"a": {"config": "p", "init": "b"}, "b": {"config": "p", "init": "a"}},
                           "arms": {"scratch": {}}}}}
    with pytest.raises(ValueError, match="circular"):
        _parse("x", raw)


# ---------------------------------------------------------------- paper scale

@pytest.mark.slow
def test_paper_scale_cascade_takes_a_training_step_on_the_cpu():
    """ResNeSt-200 + FPN + 3-stage cascade + mask head (the paper's model): one SGD step at 128 px."""
    import resource

    torch.manual_seed(0)
    net = cascade_mask_rcnn(num_classes=2)  # the defaults are the paper-scale model
    n_params = sum(p.numel() for p in net.parameters())
    assert 110e6 < n_params < 125e6  # ResNeSt-200 (~68 M) + FPN + three 1024-d box heads (~42 M) + mask head
    assert net.backbone.body.feature_info.channels() == [256, 512, 1024, 2048]
    image, target = square_target(128, ((10, 10, 30), (60, 70, 40)))
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    start = time.perf_counter()
    losses = net([image], [target])
    sum(losses.values()).backward()
    optimizer.step()
    seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"paper-scale training step at 128 px: {seconds:.1f} s, peak RSS {peak_gb:.2f} GB, {n_params / 1e6:.1f} M params")
    assert all(torch.isfinite(v) for v in losses.values()) and len(losses) == 9


@pytest.mark.slow
def test_paper_scale_backbone_passes_monai_verify_net_in_out():
    """MONAI's verify_net_in_out on the part of the paper-scale model with one-tensor output: the ResNeSt-200
    backbone as MoCo encodes images (pretrain_amt2.yaml's `moco#encoder`), 3 x 128 x 128 in, 2048 features
    out. The whole detector returns a list of dicts: tests/test_bundle_conformance.py checks that format."""
    from monai.bundle import verify_net_in_out

    from cellzoo.bundles import bundle_path, config_files

    folder = bundle_path("cupre_instance_seg") / "configs"
    verify_net_in_out(net_id="moco#encoder", meta_file=str(folder / "metadata.json"),
                      config_file=config_files("cupre_instance_seg", "pretrain_amt2"), device="cpu", n=4,
                      num_classes=2, **{"_meta_#network_data_format#outputs#pred#num_channels": 2048})
