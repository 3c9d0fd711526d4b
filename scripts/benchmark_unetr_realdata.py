"""UNETR (scratch / MAE / MAE + heavy augmentation) and the ISL pretext on real label-free -> nucleus data, quick size.

Two real data sets (read only, /work/shared/realdata), each split into a left half for training and a right
half for testing, so no test pixel is seen in training (the split of scripts/benchmark_isl_realdata.py):
- isl_labelfree: one 1024 x 1024 field, phase contrast at focal planes z0, z6, z12 -> confocal DAPI (max
  projection). Written as one LightMyCells image (PC, planes z0..z2; target Nucleus) per half.
- fnet_labelfree: a 32 x 128 x 128 transmitted-light stack -> DNA dye, slice-wise: slice k (1..30) is one
  LightMyCells image with the planes k-1, k, k+1 (BF; best focus the middle) and the DNA slice k as Nucleus.
Per seed: the MAE (pretrain.yaml + quick.yaml) on the training half's planes; the nucleus model
(train.yaml + quick.yaml) from scratch (light augmentation), from the MAE (light) and from the MAE (heavy);
each scored on the test half by evaluate.yaml (challenge metrics over every plane). The ISL bundle's pretext
(pretrain.yaml + quick.yaml, three planes as channels -> DAPI) trains on the same training half; its
predicted stain of the test half is scored with the same challenge metrics. As a floor, the label-free
plane itself is scored as the prediction.

    .venv/bin/python scripts/benchmark_unetr_realdata.py [--datasets isl,fnet] [--seeds 0,1,2] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from cellzoo.bundles import run_config
from cellzoo.io import read_image, write_ome_tiff, write_tiff
from cellzoo.methods.unetr import challenge_metrics

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
ARMS = {"scratch": (False, "light"), "mae": (True, "light"), "mae_heavy": (True, "heavy")}
METRICS = ("psnr", "ssim", "pcc", "mae")


def isl_field(folder: Path) -> tuple[list[tuple[np.ndarray, list[np.ndarray]]], np.ndarray | None]:
    """[(target, [planes])] for the one field, phase contrast z0, z6, z12 -> DAPI."""
    planes = [read_image(folder / f"input_phase_z{z}.png")[0].astype(np.float32) for z in (0, 6, 12)]
    target = read_image(folder / "target_maxproj_DAPI_CONFOCAL.png")[0].astype(np.float32)
    return [(target, planes)]


def fnet_slices(folder: Path) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """[(DNA slice k, [light k-1, k, k+1])] for k = 1..Z-2."""
    light, _ = read_image(folder / "whole_cropped_light.tif", axes="ZYX")
    dna, _ = read_image(folder / "whole_cropped_nuc.tif", axes="ZYX")
    return [(dna[k], [light[k - 1], light[k], light[k + 1]]) for k in range(1, light.shape[0] - 1)]


def write_halves(fields: list, modality: str, out: Path) -> dict[str, Path]:
    """Left halves -> out/train, right halves -> out/test, as LightMyCells (Study_1) and ISL (field_k) layouts."""
    roots = {}
    for half in ("train", "test"):
        lmc, isl = out / half / "lightmycells", out / half / "isl"
        for k, (target, planes) in enumerate(fields, start=1):
            cut = target.shape[1] // 2
            part = (lambda a: a[:, :cut]) if half == "train" else (lambda a: a[:, cut:])
            for z, plane in enumerate(planes):
                write_ome_tiff(lmc / "Study_1" / f"image_{k}_{modality}_z{z}.ome.tiff", part(plane), "YX")
                write_tiff(isl / f"field_{k:03d}" / f"input_PLANE_z{z}.tif", part(plane), "YX")
            write_ome_tiff(lmc / "Study_1" / f"image_{k}_Nucleus.ome.tiff", part(target), "YX")
            write_tiff(isl / f"field_{k:03d}" / "target_DAPI.tif", part(target), "YX")
        roots[half] = out / half
    return roots


def floor_scores(test: Path) -> dict[str, float]:
    """The label-free plane itself scored as the prediction (mean over planes and images)."""
    scores = []
    for target_path in sorted(test.glob("lightmycells/Study_1/image_*_Nucleus.ome.tiff")):
        target, _ = read_image(target_path)
        for plane in sorted(target_path.parent.glob(target_path.name.replace("_Nucleus", "_*_z*"))):
            scores.append(challenge_metrics(read_image(plane)[0], target, "Nucleus"))
    return {m: float(np.mean([s[m] for s in scores])) for m in METRICS}


def unetr_arms(roots: dict[str, Path], out: Path, seed: int, args) -> dict[str, dict]:
    """MAE once, then each arm trained on the training half and evaluated on the test half."""
    train, test = str(roots["train"] / "lightmycells"), str(roots["test"] / "lightmycells")
    common = {"seed": seed, "n_folds": 2, "val_interval": max(1, args.epochs // 5)}
    mae = out / f"seed{seed}" / "mae"
    run_config("unetr_lightmycells", "pretrain", quick=True, dataset_dir=train, ckpt_dir=str(mae),
               output_dir=str(mae / "runs"), max_epochs=args.mae_epochs, samples_per_epoch=args.samples_per_epoch,
               warmup_epochs=2, **{**common, "val_interval": max(1, args.mae_epochs // 5)})
    results = {}
    for arm, (pretrained, augmentation) in ARMS.items():
        folder = out / f"seed{seed}" / arm
        run_config("unetr_lightmycells", "train", quick=True, dataset_dir=train, organelle="Nucleus",
                   init_ckpt=str(mae / "model.pt") if pretrained else None, augmentation=augmentation,
                   ckpt_dir=str(folder), output_dir=str(folder / "runs"), max_epochs=args.epochs,
                   samples_per_epoch=args.samples_per_epoch, warmup_epochs=1, **common)
        run_config("unetr_lightmycells", "evaluate", quick=True, dataset_dir=test, organelle="Nucleus",
                   checkpoints=[str(folder / "model.pt")], output_dir=str(folder / "eval"))
        results[arm] = json.loads((folder / "eval" / "metrics.json").read_text())
    return results


def isl_pretext(roots: dict[str, Path], out: Path, seed: int, args) -> dict[str, float]:
    """The ISL bundle's pretext on the same training half, its predicted DAPI of the test half scored."""
    inputs = ["PLANE_z0", "PLANE_z1", "PLANE_z2"]
    folder = out / f"seed{seed}" / "isl_pretext"
    run_config("isl_segmentation", "pretrain", quick=True, dataset_dir=str(roots["train"] / "isl"), inputs=inputs,
               target_channel="DAPI", ckpt_dir=str(folder), output_dir=str(folder / "runs"), seed=seed,
               max_epochs=args.epochs, samples_per_epoch=args.samples_per_epoch, roi_size=args.isl_roi,
               val_interval=max(1, args.epochs // 5), n_folds=2)
    run_config("isl_segmentation", "inference", quick=True, task="fluorescence", input_dir=str(roots["test"] / "isl"),
               inputs=inputs, target_channel="DAPI", checkpoints=[str(folder / "model.pt")],
               output_dir=str(folder / "pred"), roi_size=args.isl_roi)
    scores = []
    for field in sorted((roots["test"] / "isl").glob("field_*")):
        target, _ = read_image(field / "target_DAPI.tif")
        pred, _ = read_image(folder / "pred" / f"{field.name}_DAPI.ome.tif")
        scores.append(challenge_metrics(pred, target, "Nucleus"))
    return {m: float(np.mean([s[m] for s in scores])) for m in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="isl,fnet")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=20, help="fine-tuning (and ISL pretext) epochs")
    parser.add_argument("--mae_epochs", type=int, default=60)
    parser.add_argument("--samples_per_epoch", type=int, default=32)
    parser.add_argument("--isl_roi", type=int, default=64, help="ISL crop (quick.yaml's 64; multiple of 32)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="unetr_realdata_"))
    readers = {"isl": (isl_field, "isl_labelfree", "PC"), "fnet": (fnet_slices, "fnet_labelfree", "BF")}
    report = {}
    for name in args.datasets.split(","):
        reader, folder, modality = readers[name]
        if not (REALDATA / folder).is_dir():
            raise SystemExit(f"real data not found at {REALDATA / folder}")
        roots = write_halves(reader(REALDATA / folder), modality, out / name / "data")
        entry = {"floor_plane_as_prediction": floor_scores(roots["test"]), "seeds": {}}
        for seed in (int(s) for s in args.seeds.split(",")):
            started = time.perf_counter()
            arms = unetr_arms(roots, out / name, seed, args)
            isl = isl_pretext(roots, out / name, seed, args)
            entry["seeds"][seed] = {"isl_pretext": isl, "wall_s": round(time.perf_counter() - started),
                                    **{arm: {m: r[m] for m in METRICS} | {"by_focal_offset": {
                                        o: v["psnr"] for o, v in r["by_focal_offset"].items()}}
                                       for arm, r in arms.items()}}
            print(json.dumps({name: {str(seed): entry["seeds"][seed]}}), flush=True)
        report[name] = entry
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"report: {out / 'report.json'}")


if __name__ == "__main__":
    main()
