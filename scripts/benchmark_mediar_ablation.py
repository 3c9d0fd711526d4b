"""MEDIAR inference ablation on real held-out images: flip TTA on/off, one vs two checkpoints (quick config).

The paper's claim: test-time augmentation and the ensemble of two models each add F1. Data: the 17 real
nucleus images of the label-efficiency benchmark (DSB2018 stage-1 test fluorescence, Fluo-N2DL-HeLa,
Fluo-N2DH-GOWT1), split as the benchmark splits them (5 test images, split seed 0); per repetition r two
quick models train on the other 12 with seeds 2r and 2r + 1, and `evaluate.yaml` scores the test images
four ways: model A alone or the ensemble A + B, each with and without TTA. Prints one JSON line per
repetition and the table (mean +- sd over repetitions) of F1 at IoU 0.5 and COCO box AP.

    .venv/bin/python scripts/benchmark_mediar_ablation.py [--repeats 3] [--epochs 24] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from cellzoo.benchmarks.label_efficiency import SPLIT_SEED, TASKS
from cellzoo.benchmarks.layouts import write_layout
from cellzoo.benchmarks.samples import real_nuclei
from cellzoo.bundles import run_config
from cellzoo.studies.engine import split_test

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
VARIANTS = {"one model": (False, False), "one model + TTA": (False, True), "two models": (True, False),
            "two models + TTA": (True, True)}
METRICS = ("f1", "box_ap")


def train(data: Path, names: list[str], test: list[str], seed: int, out: Path, epochs: int) -> Path:
    """A quick MEDIAR model on the training images (validated on them: no labelled image to spare)."""
    folder = out / f"model_seed{seed}"
    if not (folder / "model.pt").is_file():
        training = [n for n in names if n not in test]
        run_config("mediar_cellseg", "train", quick=True, dataset_dir=str(data), train_items=training,
                   val_items=training, seed=seed, max_epochs=epochs, val_interval=max(1, epochs // 4),
                   ckpt_dir=str(folder), output_dir=str(folder / "runs"))
    return folder / "model.pt"


def evaluate(data: Path, checkpoints: list[Path], tta: bool, test: list[str], out: Path) -> dict:
    run_config("mediar_cellseg", "evaluate", quick=True, dataset_dir=str(data), eval_items=test, tta=tta,
               checkpoints=[str(c) for c in checkpoints], output_dir=str(out))
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--realdata", type=Path, default=REALDATA)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="mediar_ablation_"))
    labelled, _ = real_nuclei(args.realdata)
    data = out / "data"
    if not (data / "labels").is_dir():
        write_layout("cellseg", labelled, data)
    names = [s.name for s in labelled]
    test, _ = split_test(names, TASKS["nuclei_real"].n_test, SPLIT_SEED, data)
    results: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
    for r in range(args.repeats):
        models = [train(data, names, test, seed, out, args.epochs) for seed in (2 * r, 2 * r + 1)]
        scores = {}
        for variant, (ensemble, tta) in VARIANTS.items():
            folder = out / f"rep{r}" / variant.replace(" ", "_").replace("+", "plus")
            scores[variant] = evaluate(data, models if ensemble else models[:1], tta, test, folder)
            results[variant].append(scores[variant])
        print(json.dumps({"repeat": r, **{v: {m: round(s[m], 4) for m in METRICS} for v, s in scores.items()}}),
              flush=True)
    print(f"\ntest images: {', '.join(test)}; {args.repeats} repetitions (mean ± sd)\n")
    print("| inference | " + " | ".join(METRICS) + " |\n| --- |" + " --- |" * len(METRICS))
    for variant, runs in results.items():
        cells = [f"{statistics.fmean(r[m] for r in runs):.3f} ± {statistics.stdev(r[m] for r in runs):.3f}"
                 if len(runs) > 1 else f"{runs[0][m]:.3f}" for m in METRICS]
        print(f"| {variant} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
