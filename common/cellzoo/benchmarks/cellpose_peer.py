"""The peer row of the nucleus tables: cellpose trained from scratch with its own `train_seg`, under the same rule.

A user with few labels would otherwise train cellpose. This runs cellpose 3.1 (its CNN; 4.x trains only
Cellpose-SAM, a ViT-L, out of reach of a CPU) beside the project, not as a dependency: it needs the folder
`scripts/install_cellpose_reference.sh` installs (`.bench/cellpose`, or $CELLPOSE_PATH).

Sized as the bundles' quick configs are (`Rule`): cellpose's U-Net with its first three levels at half width
(16, 32, 64 channels instead of 32, 64, 128; the last keeps 256, the style size cellpose's eval assumes) on
128-px crops (MEDIAR quick's). At its own size (224-px crops) one training step of 8 crops takes 11.1 s on
one CPU thread, so the 10-minute guard would stop it after about 54 steps; this size takes 1.4 s
(`scripts/benchmark_cellpose_peer.py`, docs/benchmarks.md). Masks are kept whatever their flow error
(`flow_threshold` 0), for the reason MEDIAR's quick.yaml gives: a network trained for minutes predicts
flows too weak for cellpose's 0.4 check, which then discards its masks.

It behaves as a study of the benchmark (same files, so `label_efficiency` collects it like a bundle): on the
CellSeg layout of a task, the same test items (`split_test`), the same nested training sets per seed
(`training_order`), then per seed and budget N:

1. a worker process runs `cellpose.train.train_seg` unmodified (its AdamW, learning-rate schedule and
   augmentation) on the N images, saving a snapshot every `val_every` epochs;
2. the controller scores each snapshot on the validation items (the training items, as every arm of a
   study) with cellzoo's instance scorer, and applies the rule of `cellzoo.engines.Convergence`: stop after
   `patience` validations without a better F1 (not before `min_samples`), at `max_epochs`, or after
   `max_minutes`; the best snapshot is kept;
3. the best snapshot segments the test items and `write_instance_report` scores them, as MEDIAR's evaluation
   does (same IoU and border margin).

The curve (iteration, epoch, validation F1) is written beside the snapshots as training_curve.csv, in the
bundles' columns.

    python -m cellzoo.benchmarks.cellpose_peer DATA --sizes 1,4 --seeds 0,1,2 --n-test 5 --out OUT [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellzoo.engines.convergence import COLUMNS as CURVE_COLUMNS
from cellzoo.engines.convergence import EARLY_STOP, write_summary
from cellzoo.studies.report import write_csv

__all__ = ["PEER", "Rule", "cellpose_path", "peer_command"]

PEER = "cellpose"
TASK = "cells"  # the folder and CSV names a study of MEDIAR's "cells" task writes
SNAPSHOT = "peer"


@dataclass(frozen=True)
class Rule:
    """The benchmark's rule for MEDIAR (its study.yaml `settings`) in cellpose's units (8 crops per epoch: one
    batch), and the size."""

    nimg_per_epoch: int = 8
    batch_size: int = 8
    crop: int = 128
    # cellpose's CPnet channels per level (its default 32-256); the last stays 256, the style size its eval assumes
    widths: tuple[int, ...] = (16, 32, 64, 256)
    flow_threshold: float = 0.0
    val_every: int = 16        # epochs: a validation every 128 samples, as MEDIAR's every 2nd quick epoch
    patience: int = 3
    min_samples: int = 640     # MEDIAR quick: 80 iterations of batch 8
    max_epochs: int = 640
    max_minutes: float = 10.0


SMOKE = Rule(val_every=2, patience=1, min_samples=0, max_epochs=6, max_minutes=2.0)  # a check that it runs

def cellpose_path() -> Path | None:
    """The folder holding the cellpose package (installed beside the project), or None."""
    candidates = [os.environ.get("CELLPOSE_PATH"), Path(__file__).resolve().parents[3] / ".bench" / "cellpose"]
    return next((Path(c) for c in candidates if c and (Path(c) / "cellpose").is_dir()), None)


def peer_command(data: Path, sizes, seeds, n_test: int, out: Path) -> list[str]:
    return [sys.executable, "-m", "cellzoo.benchmarks.cellpose_peer", str(data), "--sizes", ",".join(map(str, sizes)),
            "--seeds", ",".join(map(str, seeds)), "--n-test", str(n_test), "--out", str(out)]


def _environment() -> dict:
    path = cellpose_path()
    if path is None:
        raise RuntimeError("cellpose is not installed beside the project: run scripts/install_cellpose_reference.sh")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(path), os.environ.get("PYTHONPATH")]))}


def _read(entries: list[dict]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from cellzoo.io import read_image, read_labels

    return ([np.squeeze(read_image(e["image"], axes="YX")[0]).astype(np.float32) for e in entries],
            [read_labels(e["label"]) for e in entries])


def train_worker(data: str, items: list[str], out: str, seed: int, rule: Rule) -> None:
    """cellpose's own training from scratch (no weights loaded), snapshots every `val_every` epochs."""
    import torch
    from cellpose import train

    from cellzoo.io.layouts.cellseg import read_cellseg

    torch.manual_seed(seed)
    entries = [e for e in read_cellseg(data) if e["name"] in set(items)]
    images, labels = _read(entries)
    model = _model(rule)
    train.train_seg(model.net, train_data=images, train_labels=labels, channels=[0, 0], normalize=True,
                    n_epochs=rule.max_epochs, batch_size=rule.batch_size, nimg_per_epoch=rule.nimg_per_epoch,
                    bsize=rule.crop, save_path=out, save_every=rule.val_every, save_each=True, model_name=SNAPSHOT,
                    min_train_masks=1)


def _model(rule: Rule, snapshot: Path | None = None):
    """A cellpose model of the rule's widths, untrained or with a snapshot's weights."""
    from cellpose import models
    from cellpose.resnet_torch import CPnet

    model = models.CellposeModel(gpu=False, pretrained_model=False, nchan=2)
    model.net = CPnet([2, *rule.widths], model.nclasses, sz=3, mkldnn=model.mkldnn, max_pool=True,
                      diam_mean=model.diam_mean).to(model.device)
    if snapshot is not None:
        model.net.load_model(str(snapshot), device=model.device)
    return model


def _segment(snapshot: Path, images: list[np.ndarray], rule: Rule) -> list[np.ndarray]:
    model = _model(rule, snapshot)
    diameter = float(model.net.diam_labels.item())  # the mean diameter of the training cells
    return [np.asarray(model.eval(image, channels=[0, 0], diameter=diameter, flow_threshold=rule.flow_threshold)[0])
            for image in images]


def _f1(snapshot: Path, images, labels, rule: Rule, iou: float, border_margin: int) -> float:
    from cellzoo.metrics.instance import instance_scores, threshold_key

    scores = [instance_scores(gt, pred, (iou,), border_margin)["thresholds"][threshold_key(iou)]["f1"]
              for pred, gt in zip(_segment(snapshot, images, rule), labels)]
    return float(np.mean(scores))


def _snapshot(folder: Path, epoch: int) -> Path:
    return folder / "models" / f"{SNAPSHOT}_epoch_{epoch:04d}"


def _ready(path: Path) -> bool:
    """A snapshot is complete once its size stops changing (torch.save writes it in one go)."""
    if not path.is_file():
        return False
    size = path.stat().st_size
    time.sleep(1.0)
    return size > 0 and path.stat().st_size == size


def train_with_rule(data: Path, entries: list[dict], folder: Path, seed: int, rule: Rule, scoring: dict) -> Path:
    """Run the worker and stop it by the rule; returns the best snapshot (written as <folder>/model)."""
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = _read(entries)
    items = json.dumps([e["name"] for e in entries])
    code = (f"import json; from cellzoo.benchmarks.cellpose_peer import Rule, train_worker; "
            f"train_worker({str(data)!r}, json.loads({items!r}), {str(folder)!r}, {seed}, Rule(**{rule.__dict__!r}))")
    started, best, bad, rows = time.perf_counter(), None, 0, []
    reason = f"max_epochs {rule.max_epochs} reached"
    with open(folder / "train.log", "w") as log:
        worker = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT, env=_environment())
    try:
        epoch = rule.val_every
        while epoch < rule.max_epochs:
            path = _snapshot(folder, epoch)
            while not _ready(path):
                if worker.poll() is not None:
                    raise RuntimeError(f"cellpose training ended early (exit {worker.returncode}); see {folder / 'train.log'}")
            score = _f1(path, images, labels, rule, **scoring)
            samples = (epoch + 1) * rule.nimg_per_epoch  # train_seg saves after training epoch `epoch` (from 0)
            # the curve in the bundles' columns (cellzoo.engines.Convergence): one batch per epoch
            rows.append({"iteration": samples // rule.batch_size, "epoch": epoch + 1, "val_metric": score})
            if best is None or score > best["val_metric"]:  # the first of equals is kept
                best, bad = rows[-1], 0
            elif samples >= rule.min_samples:
                bad += 1
            minutes = (time.perf_counter() - started) / 60
            if bad >= rule.patience:
                reason = f"{EARLY_STOP}: no better val_f1 in {rule.patience} validations"
                break
            if minutes >= rule.max_minutes:
                reason = f"time limit of {rule.max_minutes} min"
                break
            epoch += rule.val_every
    finally:
        worker.kill()
        worker.wait()
    write_csv(rows, folder / "training_curve.csv", CURVE_COLUMNS)
    minutes = (time.perf_counter() - started) / 60
    write_summary(folder, reason, rows[-1]["iteration"], minutes, "val_f1", best, rows[-1])
    model = folder / "model"
    os.replace(_snapshot(folder, best["epoch"] - 1), model)  # train_seg numbers its snapshots from epoch 0
    print(f"cellpose seed {seed}, N={len(entries)}: {reason}; best val F1 {best['val_metric']:.4f} at epoch {best['epoch']}, "
          f"stopped at epoch {rows[-1]['epoch']} after {minutes:.1f} min", file=sys.stderr, flush=True)
    return model


def evaluate(model: Path, entries: list[dict], out: Path, scoring: dict, rule: Rule) -> dict:
    """Segment the test items with the kept snapshot; score them as MEDIAR's evaluation does."""
    from cellzoo.io import write_tiff
    from cellzoo.metrics.folders import write_instance_report

    images, _ = _read(entries)
    for entry, labels in zip(entries, _segment(model, images, rule)):
        write_tiff(out / "labels" / f"{entry['name']}_label.tiff", labels.astype(np.uint32), "YX")
    return write_instance_report(out / "labels", [e["label"] for e in entries], out / "metrics.json", **scoring)


def run_peer(data: Path, sizes: list[int], seeds: list[int], n_test: int, out: Path, rule: Rule = Rule()) -> list[dict]:
    """The study: rows {bundle, task, arm, n, seed, metric, value} in <out>/cells/cellpose_cells.csv."""
    from cellzoo.bundles import parse_config_value
    from cellzoo.io.layouts.cellseg import read_cellseg
    from cellzoo.studies.engine import MANIFEST, split_test, training_order

    entries = {e["name"]: e for e in read_cellseg(data) if e.get("label")}
    test, pool = split_test(sorted(entries), n_test, 0, data)
    scoring = {key: parse_config_value("mediar_cellseg", "evaluate", key) for key in ("iou", "border_margin")}
    root = out / TASK
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).write_text(json.dumps({"bundle": PEER, "data": str(data), "test_items": test}, indent=2))
    rows = []
    for seed in seeds:
        order = training_order(pool, seed)
        for n in sizes:
            folder = root / f"seed{seed}" / "scratch" / f"n{n}"
            result = folder / "result.json"
            if not result.is_file():
                started = time.perf_counter()
                model = train_with_rule(data, [entries[k] for k in order[:n]], folder, seed, rule, scoring)
                minutes = (time.perf_counter() - started) / 60
                report = evaluate(model, [entries[k] for k in test], folder / "eval", scoring, rule)
                scores = {k: v for k, v in report.items() if isinstance(v, float)}
                result.write_text(json.dumps({"train_items": order[:n], "scores": scores, "minutes": minutes}))
            done = json.loads(result.read_text())
            rows += [{"bundle": PEER, "task": TASK, "arm": "scratch", "n": n, "seed": seed, "metric": k, "value": v}
                     for k, v in done["scores"].items()]
    write_csv(rows, root / f"{PEER}_{TASK}.csv")  # the columns of a study's table
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="cellpose from scratch as a benchmark peer")
    parser.add_argument("data")
    parser.add_argument("--sizes", required=True)
    parser.add_argument("--seeds", required=True)
    parser.add_argument("--n-test", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--smoke", action="store_true", help="a few epochs: checks the steps, not a result")
    args = parser.parse_args(argv)
    sys.path.insert(0, _environment()["PYTHONPATH"].split(os.pathsep)[0])  # refuses when cellpose is missing
    run_peer(Path(args.data).absolute(), [int(s) for s in args.sizes.split(",")],
             [int(s) for s in args.seeds.split(",")], args.n_test, Path(args.out).absolute(),
             SMOKE if args.smoke else Rule())
    return 0


if __name__ == "__main__":
    sys.exit(main())
