"""Engine glue used by the bundle configs: validation metric, batch preparation, loaders, checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from cellzoo.engines import PrepareImageTarget, load_weights, read_state_dict, training_loader, transfer_weights
from cellzoo.errors import InputError
from cellzoo.methods.mediar import replay_loader
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
    loader = replay_loader(target, batch_size=4, replay_dataset=replay, replay_per_batch=1, seed=0)
    batches = [values for (values,) in loader]
    assert len(batches) == 2  # 6 target samples, 3 per batch
    assert all(int((values >= 100).sum()) == 1 for values in batches)
    assert sorted(torch.cat(batches)[torch.cat(batches) < 100].tolist()) == list(range(6))


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


def test_load_weights_refuses_a_checkpoint_that_does_not_fit(tmp_path):
    torch.save(torch.nn.Linear(3, 4).state_dict(), tmp_path / "other.pt")
    with pytest.raises(InputError, match="does not fit the network: 0 tensors loaded; 2 of another shape.*"
                                         "put quick.yaml at the end of --config_file"):
        load_weights(torch.nn.Linear(3, 2), tmp_path / "other.pt")
    with pytest.raises(InputError) as refused:  # cellzoo predict gives its own remedy
        load_weights(torch.nn.Linear(3, 2), tmp_path / "other.pt", config_hint=False)
    assert "quick.yaml" not in str(refused.value)
    torch.save({"weight": torch.zeros(2, 3)}, tmp_path / "partial.pt")
    with pytest.raises(InputError, match="1 missing \\(bias\\)"):
        load_weights(torch.nn.Linear(3, 2), tmp_path / "partial.pt")


def test_transfer_weights_copies_what_fits_and_reports_the_rest(tmp_path):
    source = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 1, 3))
    torch.save({"model": source.state_dict()}, tmp_path / "pretext.pt")
    target = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 2, 3), torch.nn.Conv2d(2, 2, 1))
    before = target[2].weight.detach().clone()
    match = transfer_weights(target, tmp_path / "pretext.pt")
    assert match.loaded == ["0.bias", "0.weight"]
    assert match.mismatched == ["1.bias", "1.weight"]  # 1 -> 2 output channels
    assert match.missing == ["2.bias", "2.weight"] and match.unexpected == []
    assert torch.equal(target[0].weight, source[0].weight)
    assert torch.equal(target[2].weight, before)  # untouched where nothing fits
    with pytest.raises(InputError, match="no tensor of this checkpoint fits"):  # nothing fits after the rename
        transfer_weights(target, tmp_path / "pretext.pt", rename=lambda s: {"x" + k: v for k, v in s.items()})


def test_transfer_weights_refuses_a_file_of_which_nothing_fits(tmp_path):
    torch.save({"model": torch.nn.Linear(5, 5).state_dict()}, tmp_path / "wrong.pt")
    with pytest.raises(InputError, match="no tensor of this checkpoint fits the network"):
        transfer_weights(torch.nn.Conv2d(1, 1, 3), tmp_path / "wrong.pt")
    assert transfer_weights(torch.nn.Conv2d(1, 1, 3), None) is None


def test_head_layers_meant_to_start_anew_do_not_warn(tmp_path, caplog):
    """A class or output head of another size, declared as new_layers, is reported as intended; a shape
    difference elsewhere still warns."""
    source = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 3, 1))
    torch.save({"model": source.state_dict()}, tmp_path / "pretext.pt")
    target = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 2, 1))
    with caplog.at_level("INFO", logger="cellzoo.engines.weights"):
        transfer_weights(target, tmp_path / "pretext.pt", new_layers=["1.*"])
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert "the 2 tensors of the task's own head layers start anew, as intended (1.bias, 1.weight)" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="cellzoo.engines.weights"):
        transfer_weights(target, tmp_path / "pretext.pt", new_layers=["0.*"])
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "another size" in warnings[0] and "as intended" not in caplog.text


@pytest.mark.parametrize("bundle, expected", [
    ("pmc_detection", ["heads.0.out.weight", "heads.1.out.bias"]),
    ("cupre_instance_seg", ["roi_heads.stages.2.predictor.cls_score.weight",
                            "roi_heads.mask_predictor.mask_fcn_logits.bias"])])
def test_the_bundles_declare_their_task_heads_as_new_layers(bundle, expected):
    from fnmatch import fnmatch

    import yaml

    from cellzoo.bundles import bundle_path

    patterns = yaml.safe_load((bundle_path(bundle) / "configs" / "train.yaml").read_text())["new_layers"]
    assert all(any(fnmatch(name, p) for p in patterns) for name in expected)
    assert not any(fnmatch("roi_heads.stages.2.predictor.bbox_pred.weight", p) or fnmatch("heads.0.blocks.0.weight", p)
                   for p in patterns)
