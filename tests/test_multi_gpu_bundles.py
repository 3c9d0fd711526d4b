"""Each bundle's multi_gpu_train.yaml under torchrun with 2 gloo processes on the CPU, briefly (MEDIAR's, the
shared machinery, is tests/test_lifecycle.py): the run finishes (no hang, no unused-parameter stop), both
processes train the same number of steps on their own shards, and rank 0 writes the curve and the model.
The collectives themselves: tests/test_distributed.py."""

from __future__ import annotations

from pathlib import Path

import pytest

import bundle_cli
from cellzoo.engines import read_curve, read_state_dict
from cellzoo.synthetic import synthesize

pytestmark = pytest.mark.slow
# two epochs of 8 samples: 4 per process, one step of a batch of 4 each, so DDP's second step is reached
SHORT = ["--max_epochs", "2", "--samples_per_epoch", "8", "--batch_size", "4", "--n_folds", "3"]


def run_two_processes(bundle: str, configs: list[str], data: Path, out: Path, *args: str) -> tuple[list[dict], str]:
    """Train with `configs` + quick + multi_gpu_train on 2 processes; the curve rank 0 wrote, and the log."""
    result = bundle_cli.run_bundle(bundle, [*configs, "quick", "multi_gpu_train"], "--bundle_root", str(out),
                          "--dataset_dir", str(data), "--ckpt_dir", str(out / "model"), "--output_dir", str(out / "run"),
                          *SHORT, *args, launcher=bundle_cli.torchrun(2))
    assert read_state_dict(out / "model" / "model.pt")  # rank 0 saved the best model, without DDP's prefix
    return read_curve(out / "model" / "training_curve.csv"), result.stdout + result.stderr


def steps(curve: list[dict]) -> list[tuple[int, int]]:
    return [(row["epoch"], row["iteration"]) for row in curve]


@pytest.mark.parametrize("bundle, configs, layout, size, extra", [
    ("isl_segmentation", ["train"], "isl", (96, 96), []),
    ("pmc_detection", ["train"], "ctc", (96, 96), ["--min_iterations", "0"]),
    ("unetr_lightmycells", ["train", "pretrain"], "lightmycells", (96, 96), []),  # the MAE: a ViT under DDP
])
def test_two_processes_train_each_bundle(tmp_path, bundle, configs, layout, size, extra):
    data = synthesize(layout, 5, tmp_path / "data", seed=2, size=size)
    curve, _ = run_two_processes(bundle, configs, data, tmp_path / "out", *extra)
    assert steps(curve) == [(1, 1), (2, 2)]  # 8 samples an epoch over both processes: one step each
    assert all(row["val_metric"] is not None for row in curve)


def test_two_processes_run_amt2_rounds_of_moco_and_detection(tmp_path):
    """CUPre's AMT2 under DDP: each round MoCo (its own DDP wrapper, keys gathered into the queue) then the
    detector on part k of each process's COCO shard; two rounds, both validated."""
    cells = synthesize("coco", 6, tmp_path / "cells", seed=4, size=(128, 128))
    objects = synthesize("objects", 8, tmp_path / "objects", seed=3, size=(128, 128))
    curve, log = run_two_processes("cupre_instance_seg", ["train", "pretrain_amt2"], cells, tmp_path / "out",
                                   "--coco_dir", str(objects), "--val_interval", "1")
    assert [row["epoch"] for row in curve] == [1, 2] and all(row["val_metric"] is not None for row in curve)
    for k in (1, 2):  # each process logs its round k on part k (of its shard)
        assert log.count(f"AMT2 round {k}/2: detection on COCO part {k} of 2") == 2
