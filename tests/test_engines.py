"""Engine glue used by the bundle configs: validation metric, batch preparation, loaders, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from cellzoo.engines.batches import PrepareImageTarget
from cellzoo.engines.checkpoints import load_weights, read_state_dict
from cellzoo.engines.loaders import training_loader
from cellzoo.errors import InputError
from cellzoo.metrics.engine import InstanceF1Metric


def _labels(boxes, shape=(32, 32)) -> torch.Tensor:
    out = torch.zeros((1, *shape), dtype=torch.int32)
    for i, (y0, x0, y1, x1) in enumerate(boxes, start=1):
        out[0, y0:y1, x0:x1] = i
    return out


def test_instance_f1_metric_per_image_and_mean():
    gt = [_labels([(2, 2, 10, 10), (15, 15, 25, 25)]), _labels([(5, 5, 12, 12)])]
    pred = [_labels([(2, 2, 10, 10)]), _labels([(5, 5, 12, 12), (20, 20, 30, 30)])]
    metric = InstanceF1Metric(iou=0.5)
    per_image = metric(pred, gt)  # lists of (1, H, W) items, as MONAI engines hand them over
    assert torch.allclose(torch.as_tensor(per_image).flatten(), torch.tensor([2 / 3, 2 / 3]))
    assert float(metric.aggregate()) == pytest.approx(2 / 3)
    metric.reset()
    metric([gt[0]], [gt[0]])
    assert float(metric.aggregate()) == 1.0


def test_instance_f1_metric_border_margin_ignores_edge_cells():
    gt = _labels([(0, 0, 6, 6), (12, 12, 20, 20)])
    pred = _labels([(12, 12, 20, 20)])
    assert float(InstanceF1Metric(border_margin=0)([pred], [gt])[0]) == pytest.approx(2 / 3)
    assert float(InstanceF1Metric(border_margin=2)([pred], [gt])[0]) == 1.0


def test_prepare_image_target_picks_keys():
    batch = {"image": torch.ones(2, 3, 4, 4), "target": torch.zeros(2, 3, 4, 4), "label": torch.full((2, 1, 4, 4), 7)}
    image, target = PrepareImageTarget("image", "target")(batch, device="cpu")
    assert torch.equal(image, batch["image"]) and torch.equal(target, batch["target"])


def test_training_loader_fixed_epoch_size_repeats_small_sets():
    dataset = TensorDataset(torch.arange(3))
    loader = training_loader(dataset, batch_size=4, samples_per_epoch=12, seed=0)
    seen = torch.cat([batch[0] for batch in loader])
    assert len(loader) == 3 and len(seen) == 12
    assert set(seen.tolist()) == {0, 1, 2}


def test_training_loader_with_replay_puts_one_replayed_sample_per_batch():
    target = TensorDataset(torch.arange(6))
    replay = TensorDataset(torch.arange(100, 110))
    loader = training_loader(target, batch_size=4, replay_dataset=replay, replay_per_batch=1, seed=0)
    for (values,) in loader:
        assert int((values >= 100).sum()) == 1


class Payload:
    """An arbitrary class: unpickling it would run code of the checkpoint's choosing."""


def test_checkpoints_load_state_dicts_and_refuse_pickled_objects(tmp_path):
    net = torch.nn.Linear(3, 2)
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    torch.save({"model": net.state_dict()}, tmp_path / "saver.pt")  # MONAI CheckpointSaver layout
    for name in ("plain.pt", "saver.pt"):
        other = load_weights(torch.nn.Linear(3, 2), tmp_path / name)
        assert torch.equal(other.weight, net.weight)

    torch.save({"model": Payload()}, tmp_path / "unsafe.pt")  # weights_only=True must refuse pickled objects
    with pytest.raises(InputError, match="weights_only"):
        read_state_dict(tmp_path / "unsafe.pt")
    with pytest.raises(InputError, match="not found"):
        read_state_dict(tmp_path / "missing.pt")
    assert load_weights(net, None) is net
