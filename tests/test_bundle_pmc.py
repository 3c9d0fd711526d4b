"""PMC bundle end to end with the quick config, through MONAI's bundle runner, on a synthetic Cell Tracking
Challenge data set holding a 2D time-lapse (sequence 01) and a 3D one (sequence 02, one frame annotated
on a single slice, as CTC does for 3D data):

PMC pretext on every frame (annotations unused) -> detection fine-tuned from it -> evaluate (COCO box AP,
heatmap mIoU) -> inference on a folder of 2D frames and a 3D stack. Each step reads only what the previous
one wrote.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import bundle_cli
import numpy as np
import pytest
import torch
from cellzoo.engines import read_state_dict
from cellzoo.io import load_coco_json, read_image, write_tiff
from cellzoo.synthetic import synthesize

BUNDLE = "pmc_detection"
SHORT = ["--max_epochs", "2", "--samples_per_epoch", "8", "--n_folds", "2"]
pytestmark = pytest.mark.slow


def run(configs: list[str], *args: str):
    return bundle_cli.run_bundle(BUNDLE, [*configs, "quick"], *args)


@pytest.fixture(scope="module")
def ctc(tmp_path_factory) -> Path:
    """Sequence 01: 5 frames 2D (gold masks on t000, t003); sequence 02: 2 stacks of 6 slices, t000 annotated
    on slice 2 only (man_seg_000_002.tif)."""
    root = tmp_path_factory.mktemp("pmc")
    data = synthesize("ctc", 5, root / "data", seed=7, size=(96, 96))
    stacks = synthesize("ctc", 2, root / "stacks", seed=8, size=(96, 96), depth=6)
    shutil.copytree(stacks / "01", data / "02")
    labels, _ = read_image(stacks / "01_GT" / "SEG" / "man_seg000.tif")
    write_tiff(data / "02_GT" / "SEG" / "man_seg_000_002.tif", labels[2], "YX")
    return data


def test_pmc_end_to_end(ctc, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny tensors: one thread is faster on 2 shared cores
    root, data = tmp_path, str(ctc)
    result = run(["train", "pretrain"], "--dataset_dir", data, "--pretext", "pmc", "--ckpt_dir", str(root / "pretext"),
                 "--output_dir", str(root / "r1"), "--train_items", "['01_t000']", "--val_items", "['01_t003']", *SHORT)
    # the pretext trained on the named frame plus every frame without a mask: 4 2D frames, 12 slices of 2 stacks
    assert "val_ssim" in result.stdout + result.stderr
    pretext = root / "pretext" / "model.pt"
    assert read_state_dict(pretext)["heads.0.out.weight"].shape[0] == 3  # RGB (nipy_spectral) heads

    result = run(["train"], "--dataset_dir", data, "--init_ckpt", str(pretext), "--ckpt_dir", str(root / "det"),
                 "--output_dir", str(root / "r2"), "--train_items", "['01_t000', '02_t000']",
                 "--val_items", "['01_t003']", *SHORT)
    log = result.stdout + result.stderr
    assert "of another shape (heads.0.out.bias, heads.0.out.weight, heads.1.out.bias, ...)" in log
    before, after = read_state_dict(pretext), read_state_dict(root / "det" / "model.pt")
    key = "neck.stage1.0.conv_1x1.weight"  # transferred, then fine-tuned
    assert not torch.equal(before[key], after[key])
    assert torch.nn.functional.cosine_similarity(before[key].flatten(), after[key].flatten(), dim=0) > 0.9

    out = root / "eval"
    run(["inference", "evaluate"], "--dataset_dir", data, "--checkpoints", f"['{root / 'det' / 'model.pt'}']",
        "--output_dir", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    # every annotated slice: 01_t000, 01_t003 and slice 2 of 02_t000
    assert metrics["n_frames"] == 3 and metrics["n_images"] == 3
    n_cells = 0
    for name in ("01_GT/SEG/man_seg000.tif", "01_GT/SEG/man_seg003.tif", "02_GT/SEG/man_seg_000_002.tif"):
        labels, _ = read_image(ctc / name)
        n_cells += len(np.unique(labels)) - 1
    assert metrics["n_cells"] == n_cells
    assert {"ap", "ap50", "ap_small", "ap_medium", "ap_large", "heatmap_miou"} <= set(metrics)
    assert isinstance(metrics["ap"], float) and 0.0 < metrics["heatmap_miou"] <= 1.0
    assert sorted(p.name for p in (out / "coco").iterdir()) == ["01_t000.json", "01_t003.json", "02_t000.json"]

    images = root / "images"
    images.mkdir()
    shutil.copy(ctc / "01" / "t001.tif", images / "frame.tif")
    shutil.copy(ctc / "02" / "t001.tif", images / "stack.tif")
    predictions = root / "pred"
    run(["inference"], "--input_dir", str(images), "--output_dir", str(predictions), "--checkpoints",
        f"['{root / 'det' / 'model.pt'}', '{root / 'det' / 'model.pt'}']", "--threshold", "0.05")
    frame, stack = load_coco_json(predictions / "coco" / "frame.json"), load_coco_json(predictions / "coco" / "stack.json")
    assert [(im["height"], im["width"]) for im in frame["images"]] == [(96, 96)]
    assert [im["slice"] for im in stack["images"]] == list(range(6))  # one COCO image per slice of the stack
    for name, document in (("frame", frame), ("stack", stack)):
        with open(predictions / "measurements" / f"{name}_cells.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == len(document["annotations"])
        for row, annotation in zip(rows, document["annotations"]):
            x, _, w, h = annotation["bbox"]
            assert float(row["centroid_x"]) == pytest.approx(x + w / 2) and float(row["height"]) == pytest.approx(h)
    overlays = sorted(p.name for p in (predictions / "overlays").iterdir())
    assert overlays == ["frame_overlay.png"] + [f"stack_z{z:03d}_overlay.png" for z in range(6)]
