"""ISL pretext quality on a real field: phase-contrast planes -> DAPI, quick-trained on the CPU.

The field (In Silico Labeling test data, 1024 x 1024, three phase-contrast focal planes and a confocal DAPI
max projection) is cut into a left half for training and a right half for testing, so no test pixel is
seen in training. The pretext config (`pretrain.yaml` + `quick.yaml`) trains on the left half; then
`evaluate.yaml --task fluorescence` scores the right half (Pearson correlation and SSIM after percentile
normalisation). As a reference the same metrics are printed for the middle phase plane itself.

    .venv/bin/python scripts/benchmark_isl_realdata.py [--data ../shared/realdata/isl_labelfree] [--epochs 30]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from cellzoo.bundles import run_config
from cellzoo.io import read_image, write_tiff
from cellzoo.methods.isl import isl_datalist
from cellzoo.metrics.image import image_metrics

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "isl_labelfree"
INPUTS = ["phase_z0", "phase_z6", "phase_z12"]
STAIN = "DAPI"


def split_field(data: Path, out: Path) -> dict[str, Path]:
    """Write the left and right halves of the field as two ISL layouts (train, test)."""
    entry = isl_datalist(data, INPUTS, target=STAIN)[0]
    files = {f"input_{name}": path for name, path in zip(INPUTS, entry["image"])} | {f"target_{STAIN}": entry["target"]}
    roots = {"train": out / "train" / "left", "test": out / "test" / "right"}
    for name, path in files.items():
        image, _ = read_image(path)
        half = image.shape[1] // 2
        write_tiff(roots["train"] / f"{name}.tif", image[:, :half], "YX")
        write_tiff(roots["test"] / f"{name}.tif", image[:, half:], "YX")
    return {key: root.parent for key, root in roots.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REALDATA)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--samples_per_epoch", type=int, default=32)
    parser.add_argument("--roi_size", type=int, default=96)
    parser.add_argument("--out", type=Path, default=None, help="keep the model and metrics here")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"real data not found at {args.data}")
    out = args.out or Path(tempfile.mkdtemp(prefix="isl_realdata_"))
    halves = split_field(args.data, out)
    started = time.perf_counter()
    run_config("isl_segmentation", "pretrain", quick=True, dataset_dir=str(halves["train"]), inputs=INPUTS,
               target_channel=STAIN, ckpt_dir=str(out / "model"), output_dir=str(out / "runs"),
               max_epochs=args.epochs, samples_per_epoch=args.samples_per_epoch, roi_size=args.roi_size,
               val_interval=max(1, args.epochs // 5))
    train_s = time.perf_counter() - started
    run_config("isl_segmentation", "evaluate", quick=True, task="fluorescence", dataset_dir=str(halves["test"]),
               inputs=INPUTS, target_channel=STAIN, checkpoints=[str(out / "model" / "model.pt")],
               output_dir=str(out / "eval"), roi_size=args.roi_size, tta=False)
    scores = json.loads((out / "eval" / "metrics.json").read_text())
    test = isl_datalist(halves["test"], INPUTS, target=STAIN)[0]
    phase, _ = read_image(test["image"][1])
    dapi, _ = read_image(test["target"])
    reference = image_metrics(phase.astype(np.float32), dapi.astype(np.float32))
    iterations = args.epochs * args.samples_per_epoch // 4  # quick.yaml batch size 4
    print(f"train: left half 1024 x 512, {iterations} iterations of {args.roi_size}-px crops, {train_s:.0f} s")
    print(f"test (right half): PCC {scores['pcc']:.3f}  SSIM {scores['ssim']:.3f}")
    print(f"reference, middle phase plane as the prediction: PCC {reference['pcc']:.3f}  SSIM {reference['ssim']:.3f}")
    print(f"outputs in {out}")


if __name__ == "__main__":
    main()
