"""MEDIAR bundle end to end on synthetic data with the quick config, through MONAI's bundle runner.

pretrain phase 1 -> pretrain phase 2 (public + target, boundary exclusion) -> fine-tune with memory replay
-> evaluate -> inference (`cellzoo predict`, a two-checkpoint ensemble). Each step reads only what the
previous one wrote.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import bundle_cli
from cellzoo.engines import read_state_dict
from cellzoo.metrics.folders import evaluate_instance_folders
from cellzoo.synthetic import synthesize

BUNDLE = "mediar_cellseg"
# Tiny runs: one short epoch each, 128 px crops.
SHORT = ["--max_epochs", "1", "--samples_per_epoch", "8", "--batch_size", "4", "--n_folds", "3"]


def run_bundle(config: str, *args: str) -> subprocess.CompletedProcess:
    """python -m monai.bundle run with `config` + quick.yaml, as a user would type it."""
    return bundle_cli.run_bundle(BUNDLE, [config, "quick"], *args)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mediar")
    return {
        "root": root,
        "public": synthesize("cellseg", 6, root / "public", seed=10, size=(160, 160)),
        "target": synthesize("cellseg", 4, root / "target", seed=11, size=(160, 144)),
    }


@pytest.mark.slow
def test_pretrain_finetune_evaluate_infer(data):
    root = data["root"]
    run_bundle("pretrain", "--dataset_dir", str(data["public"]), "--ckpt_dir", str(root / "phase1"),
               "--output_dir", str(root / "runs1"), *SHORT)
    phase1 = root / "phase1" / "model.pt"
    assert phase1.is_file()

    run_bundle("pretrain", "--phase", "2", "--dataset_dir", str(data["public"]), "--target_dir", str(data["target"]),
               "--init_ckpt", str(phase1), "--ckpt_dir", str(root / "phase2"), "--output_dir", str(root / "runs2"),
               *SHORT)
    phase2 = root / "phase2" / "model.pt"
    state1, state2 = read_state_dict(phase1), read_state_dict(phase2)
    assert state1.keys() == state2.keys()
    assert any(not torch.equal(state1[k], state2[k]) for k in state1)  # phase 2 trained further

    run_bundle("train", "--dataset_dir", str(data["target"]), "--replay_dir", str(data["public"]),
               "--init_ckpt", str(phase2), "--ckpt_dir", str(root / "finetuned"),
               "--output_dir", str(root / "runs3"), *SHORT)
    finetuned = root / "finetuned" / "model.pt"
    assert finetuned.is_file()
    assert list((root / "runs3").glob("events.out.tfevents*"))  # TensorBoard logs

    run_bundle("evaluate", "--dataset_dir", str(data["target"]), "--checkpoints", f"['{finetuned}']",
               "--output_dir", str(root / "eval"))
    report = json.loads((root / "eval" / "metrics.json").read_text())
    assert report["n_images"] == 4
    assert set(report["f1_at"]) == {"0.60", "0.70", "0.80", "0.90"}
    # the report scores exactly the label images the evaluation wrote (recomputed independently here)
    again = evaluate_instance_folders(root / "eval" / "labels", data["target"] / "labels", border_margin=2)
    assert report["f1"] == again["f1"] and report["n_images"] == again["n_images"]

    # inference on new images of mixed sizes, dtypes and channel counts, with a two-model ensemble
    new = root / "new"
    new.mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(new / "gray16.tif", (rng.random((150, 170)) * 4000).astype(np.uint16))
    tifffile.imwrite(new / "rgb8.tif", (rng.random((96, 200, 3)) * 255).astype(np.uint8))
    tifffile.imwrite(new / "float.tif", rng.random((64, 64)).astype(np.float32))
    out = root / "pred"
    cli = subprocess.run([sys.executable, "-m", "cellzoo.cli", "predict", BUNDLE, "--input", str(new),
                          "--output", str(out), "--checkpoint", f"{finetuned},{phase2}", "--quick"],
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr[-3000:]
    for stem, shape in (("gray16", (150, 170)), ("rgb8", (96, 200)), ("float", (64, 64))):
        labels = tifffile.imread(out / "labels" / f"{stem}_label.tiff")
        assert labels.shape == shape and np.issubdtype(labels.dtype, np.integer)
        rows = list(csv.DictReader((out / "measurements" / f"{stem}_cells.csv").open()))
        assert len(rows) == len(np.unique(labels)) - 1
        assert (out / "overlays" / f"{stem}_overlay.png").is_file()


def test_predict_reports_missing_checkpoint(tmp_path):
    cli = subprocess.run([sys.executable, "-m", "cellzoo.cli", "predict", BUNDLE, "--input", str(tmp_path),
                          "--output", str(tmp_path / "o"), "--checkpoint", str(tmp_path / "none.pt")],
                         capture_output=True, text=True)
    assert cli.returncode == 2 and "checkpoint not found" in cli.stderr and "Traceback" not in cli.stderr
