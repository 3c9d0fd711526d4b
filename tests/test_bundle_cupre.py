"""CUPre bundle end to end on synthetic data with the quick config, through MONAI's bundle runner.

COCO pretraining on the synthetic natural-image set (`objects` layout) -> one AMT2 round (MoCo on the cell
images, then detection on a COCO part with L2-SP) -> few-shot fine-tuning on a fraction of the annotated
cells (CUPre++: with L2-SP) -> evaluation (box and mask AP, LIVECell and COCO protocols) -> tiled inference
to label TIFFs, COCO JSON, per-cell CSVs and overlays. Each step reads only what the previous one wrote.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import bundle_cli
from cellzoo.engines import read_state_dict
from cellzoo.io import coco_to_label_image, load_coco_json
from cellzoo.metrics import evaluate_instances
from cellzoo.synthetic import synthesize

BUNDLE = "cupre_instance_seg"
SHORT = ["--samples_per_epoch", "8", "--n_folds", "3"]
pytestmark = pytest.mark.slow


def run(configs: list[str], *args: str):
    return bundle_cli.run_bundle(BUNDLE, [*configs, "quick"], *args)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cupre")
    return {"root": root, "objects": synthesize("objects", 8, root / "objects", seed=3, size=(128, 128)),
            "cells": synthesize("coco", 10, root / "cells", seed=4, size=(128, 128)),
            "new": synthesize("coco", 3, root / "new", seed=5, size=(160, 300))}


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten().float(), b.flatten().float(), dim=0))


def test_cupre_end_to_end(data):
    root, cells = data["root"], str(data["cells"])
    run(["pretrain_coco"], "--dataset_dir", str(data["objects"]), "--ckpt_dir", str(root / "coco"),
        "--output_dir", str(root / "r1"), "--max_epochs", "2", *SHORT)
    coco = read_state_dict(root / "coco" / "model.pt")
    assert coco["roi_heads.stages.2.predictor.cls_score.weight"].shape[0] == 5  # background + 4 object categories

    run(["pretrain_amt2"], "--dataset_dir", cells, "--coco_dir", str(data["objects"]), "--init_ckpt",
        str(root / "coco" / "model.pt"), "--ckpt_dir", str(root / "amt2"), "--output_dir", str(root / "r2"),
        "--max_epochs", "1", "--exclude_items", "['SYNTH_Phase_00010']", *SHORT)
    amt2 = read_state_dict(root / "amt2" / "model.pt")
    # step (a) moved the backbone and step (b) the heads, both starting from the COCO weights
    for key in ("backbone.body.conv1.weight", "backbone.fpn.inner_blocks.0.0.weight",
                "roi_heads.stages.0.head.fc6.weight"):
        assert not torch.equal(coco[key], amt2[key]) and _cosine(coco[key], amt2[key]) > 0.9, key
    resume = torch.load(next((root / "amt2" / "resume").glob("*.pt")), map_location="cpu", weights_only=True)
    assert resume["trainer"]["iteration"] == 1 and resume["moco"]["queue"].shape == (32, 128)

    result = run(["train"], "--dataset_dir", cells, "--init_ckpt", str(root / "amt2" / "model.pt"),
                 "--train_fraction", "0.5", "--l2sp_weight", "0.001", "--ckpt_dir", str(root / "ft"),
                 "--output_dir", str(root / "r3"), "--max_epochs", "2", *SHORT)
    assert "training on 3 labelled image(s) (train_fraction 0.5" in result.stdout + result.stderr  # half of 6
    tuned = read_state_dict(root / "ft" / "model.pt")
    assert tuned["roi_heads.stages.2.predictor.cls_score.weight"].shape[0] == 2  # background + cell
    key = "backbone.body.layer4.0.conv1.weight"
    assert not torch.equal(amt2[key], tuned[key]) and _cosine(amt2[key], tuned[key]) > 0.9

    out = root / "eval"
    run(["evaluate"], "--dataset_dir", cells, "--annotations", "coco_test.json", "--checkpoints",
        f"['{root / 'ft' / 'model.pt'}']", "--output_dir", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    test = load_coco_json(data["cells"] / "coco_test.json")
    assert metrics["n_images"] == len(test["images"]) and metrics["n_objects"] == len(test["annotations"])
    for prefix in ("", "coco_"):
        for iou_type in ("bbox", "segm"):
            assert {f"{prefix}{iou_type}_{k}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR")} <= set(metrics)
    # F1 at IoU 0.5 of the label images evaluate wrote, against the rasterised ground truth
    pairs = [(coco_to_label_image([a for a in test["annotations"] if a["image_id"] == im["id"]], im["height"], im["width"]),
              tifffile.imread(out / "labels" / f"{Path(im['file_name']).stem}_label.tiff")) for im in test["images"]]
    assert metrics["f1"] == pytest.approx(evaluate_instances(pairs)["f1"])

    predictions = root / "pred"
    run(["inference"], "--input_dir", str(data["new"] / "images"), "--output_dir", str(predictions),
        "--checkpoints", f"['{root / 'ft' / 'model.pt'}']", "--tile_size", "128", "--tile_overlap", "32")
    for stem in ("SYNTH_Phase_00001", "SYNTH_Phase_00002", "SYNTH_Phase_00003"):
        labels = tifffile.imread(predictions / "labels" / f"{stem}_label.tiff")
        assert labels.shape == (160, 300)  # tiled (300 > 128 px) and stitched back to the whole image
        assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))
        with open(predictions / "measurements" / f"{stem}_cells.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == labels.max() and (not rows or 0.0 <= float(rows[0]["score"]) <= 1.0)
        detections = load_coco_json(predictions / "coco" / f"{stem}.json")
        assert detections["images"][0]["width"] == 300 and len(detections["annotations"]) >= labels.max()
        assert (predictions / "overlays" / f"{stem}_overlay.png").is_file()
