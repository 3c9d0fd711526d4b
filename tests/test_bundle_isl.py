"""ISL bundle end to end on synthetic ISL-layout data with the quick config, through MONAI's bundle runner.

pretext (label-free -> DAPI) -> nuclei from the pretext weights -> pretext for cells (DIC -> CellMask) ->
cells -> evaluate -> inference for every task. Each step reads only what the previous one wrote.
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
from cellzoo.metrics import evaluate_instances, label_pairs_coco_ap
from cellzoo.synthetic import synthesize

BUNDLE = "isl_segmentation"
SHORT = ["--max_epochs", "2", "--samples_per_epoch", "16", "--n_folds", "3"]
pytestmark = pytest.mark.slow


def run(config: str, *args: str):
    return bundle_cli.run_bundle(BUNDLE, [config, "quick"], *args)


@pytest.fixture(scope="module")
def fields(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("isl")
    return {"root": root, "train": synthesize("isl", 6, root / "train", seed=5, size=(96, 96)),
            "new": synthesize("isl", 2, root / "new", seed=6, size=(96, 128))}


def test_isl_end_to_end(fields):
    root, data = fields["root"], str(fields["train"])
    run("pretrain", "--dataset_dir", data, "--ckpt_dir", str(root / "pretext"), "--output_dir", str(root / "r1"), *SHORT)
    pretext = root / "pretext" / "model.pt"
    run("train", "--dataset_dir", data, "--init_ckpt", str(pretext), "--ckpt_dir", str(root / "nuclei"),
        "--output_dir", str(root / "r2"), *SHORT)
    # the nucleus model started from the pretext weights: its encoder moved away from them, but not far
    before, after = read_state_dict(pretext), read_state_dict(root / "nuclei" / "model.pt")
    key = "encoder.features.conv0.weight"
    assert not torch.equal(before[key], after[key])
    assert torch.nn.functional.cosine_similarity(before[key].flatten(), after[key].flatten(), dim=0) > 0.9

    run("pretrain", "--dataset_dir", data, "--inputs", "['DIC']", "--target_channel", "CELLMASK",
        "--ckpt_dir", str(root / "pretext_cells"), "--output_dir", str(root / "r3"), *SHORT)
    run("train_cells", "--dataset_dir", data, "--init_ckpt", str(root / "pretext_cells" / "model.pt"),
        "--ckpt_dir", str(root / "cells"), "--output_dir", str(root / "r4"), *SHORT)

    for task, ckpt, inputs, keys in [("fluorescence", pretext, "['BRIGHTFIELD_z0','BRIGHTFIELD_z1','PHASE']", {"pcc", "ssim", "psnr"}),
                                     ("nuclei", root / "nuclei" / "model.pt", "['BRIGHTFIELD_z0','BRIGHTFIELD_z1','PHASE']", {"iou", "dice"}),
                                     ("cells", root / "cells" / "model.pt", "['DIC']", {"map", "f1"})]:
        out = root / f"eval_{task}"
        run("evaluate", "--task", task, "--dataset_dir", data, "--inputs", inputs, "--checkpoints", f"['{ckpt}']",
            "--output_dir", str(out), "--crops_per_image", "3")
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["task"] == task and metrics["n_fields"] == 6 and metrics["crops_per_image"] == 3
        assert keys <= set(metrics)

    # whole-field instance scores (F1 at IoU 0.5, COCO box and mask AP) of the labels evaluate_instances wrote
    out = root / "eval_instances"
    run("evaluate_instances", "--task", "nuclei", "--dataset_dir", data, "--checkpoints",
        f"['{root / 'nuclei' / 'model.pt'}']", "--output_dir", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    names = sorted(p.name for p in fields["train"].glob("field_*"))
    pairs = [(tifffile.imread(fields["train"] / name / "label_nuclei.tif"), tifffile.imread(out / "labels" / f"{name}_label.tiff"))
             for name in names]
    assert metrics["n_images"] == len(names) == 6
    assert metrics["f1"] == pytest.approx(evaluate_instances(pairs)["f1"])
    assert metrics["box_ap"] == pytest.approx(label_pairs_coco_ap(pairs)["box_ap"])

    new = fields["new"]
    predictions = root / "pred"
    run("inference", "--task", "fluorescence", "--input_dir", str(new), "--output_dir", str(predictions),
        "--checkpoints", f"['{pretext}']")
    stains = sorted(predictions.glob("*_DAPI.ome.tif"))
    assert [p.name for p in stains] == ["field_001_DAPI.ome.tif", "field_002_DAPI.ome.tif"]
    with tifffile.TiffFile(stains[0]) as tif:
        assert tif.is_ome and tif.asarray().shape == (96, 128) and tif.asarray().dtype == np.float32

    run("inference", "--task", "cells", "--inputs", "['DIC']", "--input_dir", str(new), "--output_dir",
        str(predictions), "--checkpoints", f"['{root / 'cells' / 'model.pt'}', '{root / 'cells' / 'model.pt'}']")
    for field in ("field_001", "field_002"):
        labels = tifffile.imread(predictions / "labels" / f"{field}_label.tiff")
        assert labels.shape == (96, 128)
        with open(predictions / "measurements" / f"{field}_cells.csv") as handle:
            assert len(list(csv.DictReader(handle))) == len(np.unique(labels)) - 1
        assert (predictions / "overlays" / f"{field}_overlay.png").is_file()
