"""The ISL few-shot study: does in silico labeling pretraining cut the annotations a segmenter needs?

Protocol (paper 003, sec. 3): a fixed test set; for each training-set size N, one model trained from scratch
and one initialised from the pretext network (label-free -> fluorescence, trained on every non-test field,
which needs no annotation), both fine-tuned on the same N labelled fields with the same number of
iterations, then scored on 5 random crops per test field (IoU for nuclei, mean AP for cells). Everything
runs through the bundle's own configs, so the study measures exactly what users train.
"""

from __future__ import annotations

import csv
import json
import logging
import random
from pathlib import Path

from cellzoo.bundles import run_config
from cellzoo.errors import InputError
from cellzoo.io import isl_datalist

logger = logging.getLogger(__name__)

BUNDLE = "isl_segmentation"
# per task: the label-free planes, the pretext stain, the label file, the key metric of evaluate.yaml
TASKS = {
    "nuclei": {"inputs": ["BRIGHTFIELD_z0", "BRIGHTFIELD_z1", "PHASE_CONTRAST"], "stain": "DAPI", "metric": "iou"},
    "cells": {"inputs": ["DIC"], "stain": "CELLMASK", "metric": "map"},
}
INITS = ("scratch", "pretrained")
# quick.yaml's 4 epochs suit smoke tests, but the study only means something once the pretext has learnt
# the stain: on synthetic fields its Pearson correlation reaches ~0.8 after 40 quick epochs (320 iterations)
QUICK_PRETEXT_EPOCHS = 40
# and 10 quick epochs (80 iterations) of fine-tuning, enough for both initialisations to level off
QUICK_FINETUNE_EPOCHS = 10


def split_fields(data: str | Path, task: str, n_test: int | None, seed: int) -> tuple[list[str], list[str]]:
    """(test fields, training pool): fields with the task's stain and labels, shuffled once with `seed`."""
    spec = TASKS[task]
    entries = isl_datalist(data, spec["inputs"], target=spec["stain"], label=task)
    names = sorted(entry["name"] for entry in entries)
    random.Random(seed).shuffle(names)
    n_test = max(1, len(names) // 5) if n_test is None else int(n_test)
    if not 0 < n_test < len(names):
        raise InputError(f"need 1 <= n_test < {len(names)} fields (the labelled fields found), got {n_test}", data)
    return sorted(names[:n_test]), names[n_test:]


def run_fewshot(data: str | Path, sizes: list[int], task: str = "nuclei", out: str | Path = "isl_fewshot",
                quick: bool = False, n_test: int | None = None, seed: int = 0, crops_per_image: int = 5,
                pretext_epochs: int | None = None, finetune_epochs: int | None = None) -> list[dict]:
    """Run the study; writes <out>/fewshot_<task>.csv and .png and returns the table rows."""
    if task not in TASKS:
        raise InputError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    test, pool = split_fields(data, task, n_test, seed)
    sizes = sorted({int(n) for n in sizes})
    if not sizes or sizes[0] < 1 or sizes[-1] > len(pool):
        raise InputError(f"--sizes must lie in 1..{len(pool)} (fields outside the {len(test)} test fields), got {sizes}")
    out = Path(out)
    logger.info("few-shot %s: %d test fields, training pool of %d, sizes %s", task, len(test), len(pool), sizes)
    if quick:
        pretext_epochs = pretext_epochs or QUICK_PRETEXT_EPOCHS
        finetune_epochs = finetune_epochs or QUICK_FINETUNE_EPOCHS
    pretext = train_pretext(data, task, pool, out / "pretext", quick, seed, pretext_epochs)
    rows = []
    for n in sizes:
        for init in INITS:
            ckpt = fine_tune(data, task, pool[:n], init, pretext, out / f"n{n}_{init}", quick, seed, finetune_epochs)
            score = evaluate(data, task, test, ckpt, out / f"n{n}_{init}" / "eval", quick, crops_per_image)
            rows.append({"task": task, "n_train": n, "init": init, "metric": TASKS[task]["metric"],
                         "value": score, "n_test_fields": len(test), "crops_per_image": crops_per_image})
            logger.info("N=%d %s: %s = %.3f", n, init, TASKS[task]["metric"], score)
    write_table(rows, out / f"fewshot_{task}.csv")
    plot_table(rows, out / f"fewshot_{task}.png")
    return rows


def _common(data, task: str, quick: bool, seed: int) -> dict:
    return {"dataset_dir": str(data), "inputs": TASKS[task]["inputs"], "seed": seed, "quick": quick}


def train_pretext(data, task: str, pool: list[str], out: Path, quick: bool, seed: int, epochs: int | None) -> Path:
    """Pretext on every pool field: label-free planes -> the task's stain. Returns its best checkpoint."""
    # validating every pool field every epoch would cost as much as training: 4 validations per run
    extra = {"max_epochs": epochs, "val_interval": max(1, epochs // 4)} if epochs else {}
    run_config(BUNDLE, "pretrain", target_channel=TASKS[task]["stain"], train_fields=pool, val_fields=pool,
               output_dir=str(out / "runs"), ckpt_dir=str(out), **_common(data, task, quick, seed), **extra)
    return out / "model.pt"


def fine_tune(data, task: str, fields: list[str], init: str, pretext: Path, out: Path, quick: bool, seed: int,
              epochs: int | None) -> Path:
    """Train the task's segmenter on `fields` from scratch or from the pretext checkpoint.

    The kept model is the best epoch on its own training fields: with N = 1 there is no labelled field
    to spare for validation. Training sets are nested (the first N pool fields), as in the paper.
    """
    extra = {"max_epochs": epochs} if epochs else {}
    run_config(BUNDLE, f"train_{task}", init=None if init == "scratch" else f"pretext:{pretext}",
               train_fields=fields, val_fields=fields, output_dir=str(out / "runs"), ckpt_dir=str(out),
               **_common(data, task, quick, seed), **extra)
    return out / "model.pt"


def evaluate(data, task: str, fields: list[str], ckpt: Path, out: Path, quick: bool, crops_per_image: int) -> float:
    """The key metric of evaluate.yaml on `crops_per_image` random crops (roi-sized) of each test field."""
    run_config(BUNDLE, "evaluate", task=task, dataset_dir=str(data), inputs=TASKS[task]["inputs"], fields=fields,
               checkpoints=[str(ckpt)], output_dir=str(out), crops_per_image=crops_per_image,
               quick=quick)
    return float(json.loads((out / "metrics.json").read_text())[TASKS[task]["metric"]])


def write_table(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_table(rows: list[dict], path: Path) -> Path:
    """The metric against N, one line per initialisation (log-scaled N as in the paper's figures)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
    for init in INITS:
        points = sorted((r["n_train"], r["value"]) for r in rows if r["init"] == init)
        ax.plot(*zip(*points), marker="o", label=init)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training fields (N)")
    ax.set_ylabel(rows[0]["metric"])
    ax.set_title(f"ISL few-shot, {rows[0]['task']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
