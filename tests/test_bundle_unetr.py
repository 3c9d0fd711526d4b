"""UNETR LightMyCells bundle end to end on synthetic LightMyCells data with the quick config, through MONAI's
bundle runner: MAE pretraining -> nucleus model from the MAE encoder -> evaluation with the challenge
metrics -> inference to float32 OME-TIFF. Each step reads only what the previous one wrote."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import bundle_cli
from cellzoo.engines import read_state_dict
from cellzoo.io import read_image, write_ome_tiff
from cellzoo.io.physical import read_physical_size_um
from cellzoo.methods.unetr import challenge_metrics, lightmycells_items
from cellzoo.synthetic import synthesize

BUNDLE = "unetr_lightmycells"
SHORT = ["--max_epochs", "2", "--samples_per_epoch", "8", "--n_folds", "3"]
pytestmark = pytest.mark.slow


def run(configs: list[str], *args: str):
    return bundle_cli.run_bundle(BUNDLE, [*configs, "quick"], *args)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("unetr")
    return {"root": root, "train": synthesize("lightmycells", 6, root / "train", seed=3, size=(96, 96)),
            "new": synthesize("lightmycells", 2, root / "new", seed=4, size=(80, 112))}


def test_unetr_end_to_end(data):
    root, train = data["root"], str(data["train"])
    run(["pretrain"], "--dataset_dir", train, "--ckpt_dir", str(root / "mae"), "--output_dir", str(root / "r1"), *SHORT)
    mae = read_state_dict(root / "mae" / "model.pt")
    assert "blocks.4.weight" in mae and "decoder_pred.weight" in mae  # a MONAI MaskedAutoEncoderViT, 4 blocks + norm

    run(["train"], "--dataset_dir", train, "--organelle", "Nucleus", "--init_ckpt", str(root / "mae" / "model.pt"),
        "--ckpt_dir", str(root / "nucleus"), "--output_dir", str(root / "r2"), *SHORT)
    unetr = read_state_dict(root / "nucleus" / "model.pt")
    # the nucleus model's encoder started from the MAE's: moved by fine-tuning, but not far
    before, after = mae["blocks.0.attn.qkv.weight"], unetr["vit.blocks.0.attn.qkv.weight"]
    assert not torch.equal(before, after)
    assert torch.nn.functional.cosine_similarity(before.flatten(), after.flatten(), dim=0) > 0.9
    assert torch.equal(mae["patch_embedding.position_embeddings"], unetr["vit.patch_embedding.position_embeddings"])

    out = root / "eval"
    run(["inference", "evaluate"], "--dataset_dir", train, "--organelle", "Nucleus", "--checkpoints",
        f"['{root / 'nucleus' / 'model.pt'}']", "--output_dir", str(out), "--save_predictions", "true")
    metrics = json.loads((out / "metrics.json").read_text())
    items = lightmycells_items(train, "Nucleus")
    assert metrics["organelle"] == "Nucleus" and metrics["n_items"] == len(items) and metrics["n_images"] == 3 * len(items)
    assert {"mae", "ssim", "pcc", "euclidean", "cosine", "psnr"} <= set(metrics)
    assert {k: v["n_images"] for k, v in metrics["by_focal_offset"].items()} == {"0": len(items), "1": 2 * len(items)}
    assert sum(v["n_images"] for v in metrics["by_modality"].values()) == 3 * len(items)
    # metrics.json is the mean of the challenge metrics of the written (denormalised) predictions
    psnrs = []
    for item in items:
        target, _ = read_image(item["label"])
        for plane in item["image"]:
            name = Path(plane).name.replace(".ome.tiff", "_Nucleus.ome.tiff")
            psnrs.append(challenge_metrics(tifffile.imread(out / item["study"] / name), target, "Nucleus")["psnr"])
    assert metrics["psnr"] == pytest.approx(float(np.mean(psnrs)), rel=1e-6)

    # inference on a LightMyCells folder with calibrated planes of a size that is no multiple of the token size:
    # one float32 prediction per input plane, in its Study folder, of the plane's size and physical pixel size
    new, pred = root / "calibrated", root / "pred"
    for source in sorted(data["new"].glob("Study_*/image_*_z*.ome.tiff")):
        plane, _ = read_image(source)
        write_ome_tiff(new / source.relative_to(data["new"]), plane[:, :100], "YX", physical_size_um=(0.65, 0.5))
    run(["inference"], "--input_dir", str(new), "--organelle", "Nucleus", "--checkpoints",
        f"['{root / 'nucleus' / 'model.pt'}']", "--output_dir", str(pred))
    inputs = sorted(new.glob("Study_*/*.ome.tiff"))
    assert sorted(p.relative_to(pred) for p in pred.glob("Study_*/*.ome.tiff")) == [
        p.relative_to(new).with_name(p.name.replace(".ome.tiff", "_Nucleus.ome.tiff")) for p in inputs]
    result = pred / inputs[0].relative_to(new).with_name(inputs[0].name.replace(".ome.tiff", "_Nucleus.ome.tiff"))
    with tifffile.TiffFile(result) as tif:
        assert tif.is_ome and tif.asarray().shape == (80, 100) and tif.asarray().dtype == np.float32
    assert read_physical_size_um(result) == pytest.approx((0.65, 0.5))
