"""The shared convergence rule (cellzoo.engines.Convergence) on scripted ignite engines: the curve rows,
early stopping after `patience` validations without improvement, the metric's direction, the files, resume."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from ignite.engine import Engine, Events

from cellzoo.engines import Convergence, read_curve


def _saver(folder, negative: bool):
    """MONAI's key-metric CheckpointSaver, as the bundles' validators use it: Convergence reads its direction."""
    from monai.handlers import CheckpointSaver

    return CheckpointSaver(save_dir=str(folder), save_dict={"model": torch.nn.Linear(1, 1)}, save_key_metric=True,
                           key_metric_filename="model.pt", key_metric_negative_sign=negative)


def scripted(scores: list[float], epoch_length: int = 3, max_epochs: int = 20):
    """A trainer whose loss is 1/iteration and a validator that reports the next of `scores` each epoch."""
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Engine(lambda engine, batch: {"loss": torch.tensor(1.0 / engine.state.iteration)})
    trainer.optimizer = optimizer
    evaluator = Engine(lambda engine, batch: None)
    evaluator.state.key_metric_name = "val_f1"
    queue = list(scores)

    @evaluator.on(Events.EPOCH_COMPLETED)  # where ignite metrics are computed, before a saver reads them
    def _report(engine):
        engine.state.metrics["val_f1"] = queue.pop(0)

    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: evaluator.run([0]))
    return trainer, evaluator, ([0] * epoch_length, max_epochs)


def test_stops_after_patience_validations_without_improvement(tmp_path, caplog):
    trainer, evaluator, (data, max_epochs) = scripted([0.1, 0.5, 0.4, 0.5, 0.45, 0.9, 0.9])
    curve = Convergence(evaluator, tmp_path, patience=3, best_model=_saver(tmp_path / "ckpt", False))
    curve.attach(trainer)
    with caplog.at_level(logging.INFO, logger="cellzoo.engines.convergence"):
        trainer.run(data, max_epochs=max_epochs)
    # best 0.5 at epoch 2; epochs 3, 4 (equal is no improvement) and 5 do not beat it: stop after epoch 5
    assert trainer.state.epoch == 5
    rows = read_curve(tmp_path / "training_curve.csv")
    assert [r["iteration"] for r in rows] == [3, 6, 9, 12, 15]
    assert [r["val_metric"] for r in rows] == [0.1, 0.5, 0.4, 0.5, 0.45]
    assert rows[0]["train_loss"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert rows[0]["learning_rate"] == pytest.approx(0.1)
    assert curve.best()["iteration"] == 6 and curve.final()["val_metric"] == 0.45
    assert (tmp_path / "training_curve.png").stat().st_size > 1000
    assert "early stop: no better val_f1 in 3 validations" in caplog.text
    assert "best val_f1 0.5000 at iteration 6, final 0.4500" in caplog.text
    summary = json.loads((tmp_path / "training_summary.json").read_text())
    assert summary["plateau"] is True and summary["iterations"] == 15 and summary["key_metric"] == "val_f1"
    assert summary["best"] == {"iteration": 6, "value": 0.5} and summary["final"] == {"iteration": 15, "value": 0.45}


def test_lower_is_better_follows_the_best_model_saver(tmp_path):
    trainer, evaluator, (data, max_epochs) = scripted([3.0, 2.0, 2.5, 2.1, 1.0, 5.0, 5.0])
    saver = _saver(tmp_path / "ckpt", True)
    saver.attach(evaluator)
    curve = Convergence(evaluator, tmp_path, patience=2, best_model=saver)
    curve.attach(trainer)
    trainer.run(data, max_epochs=max_epochs)
    # 2.0 at epoch 2 is the lowest; 2.5 and 2.1 do not beat it: stop after epoch 4, the saver kept epoch 2
    assert trainer.state.epoch == 4 and curve.best()["val_metric"] == 2.0
    assert saver._key_metric_checkpoint._saved[-1].priority == -2.0


def test_min_delta_and_no_patience(tmp_path):
    # improvements of 0.01 do not count with min_delta 0.05
    trainer, evaluator, (data, _) = scripted([0.50, 0.51, 0.52, 0.53, 0.54])
    Convergence(evaluator, tmp_path / "a", patience=2, min_delta=0.05).attach(trainer)
    trainer.run(data, max_epochs=5)
    assert trainer.state.epoch == 3
    # patience None: the run goes to max_epochs
    trainer, evaluator, (data, _) = scripted([0.5] * 5)
    curve = Convergence(evaluator, tmp_path / "b", patience=None)
    curve.attach(trainer)
    trainer.run(data, max_epochs=5)
    assert trainer.state.epoch == 5 and curve.stop_reason == "max_epochs 5 reached"
    # a run that ends at its maximum is not on a plateau: reports must not take it as converged
    summary = json.loads((tmp_path / "b" / "training_summary.json").read_text())
    assert summary["plateau"] is False and summary["stop_reason"] == "max_epochs 5 reached"


def test_no_stop_before_min_iterations(tmp_path):
    # a score stuck at 0 for 6 epochs (18 iterations), then learning: min_iterations 15 keeps it going
    trainer, evaluator, (data, _) = scripted([0.0] * 6 + [0.2, 0.3, 0.3, 0.3, 0.3, 0.3])
    Convergence(evaluator, tmp_path, patience=2, min_iterations=15).attach(trainer)
    trainer.run(data, max_epochs=12)
    # counted from epoch 5 (iteration 15): 0 (best), 0 (1), 0.2, 0.3 (better), 0.3 (1), 0.3 (2): stop at 10;
    # without min_iterations, epochs 2 and 3 would have stopped it at 3
    assert trainer.state.epoch == 10


def test_state_round_trip_continues_the_counter(tmp_path):
    trainer, evaluator, (data, _) = scripted([0.5, 0.4, 0.3, 0.2])
    first = Convergence(evaluator, tmp_path, patience=3)
    first.attach(trainer)
    trainer.run(data, max_epochs=2)
    state = first.state_dict()
    assert state["early_stopping"]["counter"] == 1 and len(state["rows"]) == 2
    trainer, evaluator, (data, _) = scripted([0.3, 0.2])
    second = Convergence(evaluator, tmp_path, patience=3)
    second.attach(trainer)
    second.load_state_dict(state)
    trainer.run(data, max_epochs=2)  # two more epochs without improvement: counter 3, stopped
    assert second.state_dict()["early_stopping"]["counter"] == 3 and len(second.rows) == 4


def test_refuses_a_patience_below_one(tmp_path):
    with pytest.raises(ValueError, match="patience"):
        Convergence(Engine(lambda e, b: None), tmp_path, patience=0)


def test_rank_without_write_writes_nothing(tmp_path):
    trainer, evaluator, (data, _) = scripted([0.5, 0.6])
    Convergence(evaluator, tmp_path, write=False).attach(trainer)
    trainer.run(data, max_epochs=2)
    assert not list(tmp_path.iterdir())
