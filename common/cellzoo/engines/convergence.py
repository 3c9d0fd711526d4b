"""Training that stops when it has learnt: one rule for every train and pretrain config of every bundle.

`Convergence`, attached to a bundle's trainer in its `run` section, does three things each epoch:
- records the curve: iteration, epoch, mean training loss of the epoch, learning rate and (after each
  validation) the validation key metric, written as `<out_dir>/training_curve.csv` and `.png` beside the
  checkpoint after every validation (so the files exist while a long run goes on, and when MLflow logs its
  artifacts at the end);
- stops early through ignite's `EarlyStopping` when the key metric has not improved by more than
  `min_delta` for `patience` validations (None: no early stopping), counting only validations after
  `min_iterations` (a detector's score stays 0 until its outputs first pass the decoding threshold, which
  is no plateau); and, as a guard, when `max_minutes` of training have passed (ignite's `TimeLimit`);
  `max_epochs` of the trainer stays the maximum;
- at the end logs why training stopped, the best and the final score and where the curve is, and writes
  them as `<out_dir>/training_summary.json` (`plateau`: whether it stopped because the score had stopped
  improving, rather than at a guard while possibly still learning), which studies and benchmarks report.

In a multi-GPU run every process trains the same number of iterations or the run hangs in a collective:
each process validates on its shard and stops on the gathered metric, and the clock of the time guard is
read at the end of an epoch and rank 0's answer (stop or go on) taken by every process
(`cellzoo.engines.distributed.agree`), rather than each process stopping mid-epoch on its own clock.

Lower-is-better key metrics (pretext losses) follow the validator's best-model saver
(`key_metric_negative_sign`), so the stopping rule and the saved best model never disagree. Its state
(rows and the early-stopping counter) goes into the resume state, so a resumed run continues its curve.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import torch

from cellzoo.engines import distributed

logger = logging.getLogger(__name__)

COLUMNS = ("iteration", "epoch", "train_loss", "learning_rate", "val_metric")
SUMMARY = "training_summary.json"
EARLY_STOP = "early stop"  # the start of a stop reason that means the score had plateaued


def _number(value) -> float | None:
    """A float from a tensor, number or one-element sequence; None for what is not a finite number."""
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    if isinstance(value, torch.Tensor):
        value = value.detach().float().mean().item() if value.numel() else None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _loss(output, key: str) -> float | None:
    """The loss of one iteration's output: a dict, or MONAI's decollated list of dicts."""
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], dict):
        output = output[0]
    if isinstance(output, dict):
        return _number(output.get(key))
    return _number(output)


class Convergence:
    """Curve, early stopping and the closing summary of one training run (see the module docstring).

    `evaluator` is the validator whose key metric decides; `best_model` its key-metric CheckpointSaver
    (gives the metric's direction). `write` is False on the ranks of a multi-GPU run other than rank 0:
    they stop on the same (gathered) metric but write nothing.
    """

    def __init__(self, evaluator, out_dir: str | Path, patience: int | None = None, min_delta: float = 0.0,
                 max_minutes: float | None = None, min_iterations: int = 0, best_model=None, loss_key: str = "loss",
                 name: str = "training_curve", write: bool = True):
        if patience is not None and int(patience) < 1:
            raise ValueError(f"patience must be a positive number of validations or null, got {patience}")
        self.evaluator, self.out_dir, self.name = evaluator, Path(out_dir), name
        self.patience = None if patience is None else int(patience)
        self.min_delta, self.max_minutes, self.min_iterations = float(min_delta), max_minutes, int(min_iterations or 0)
        self.lower_is_better = lower_is_better(best_model)
        self.loss_key, self.write = loss_key, bool(write)
        self.rows: list[dict] = []
        self.stop_reason: str | None = None
        self._losses: list[float] = []
        self._validations_seen = 0
        self._early_stopping = None

    # ---- files ----
    @property
    def csv_path(self) -> Path:
        return self.out_dir / f"{self.name}.csv"

    @property
    def png_path(self) -> Path:
        return self.out_dir / f"{self.name}.png"

    # ---- wiring ----
    def attach(self, trainer) -> None:
        """Register on `trainer` (and its validator); call after the trainer's own handlers are attached,
        so that each epoch's validation has run when the epoch's row is written."""
        from ignite.engine import Events
        from ignite.handlers import TimeLimit

        self.trainer = trainer
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_done)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_done)
        trainer.add_event_handler(Events.COMPLETED, self._completed)
        self.evaluator.add_event_handler(Events.COMPLETED, self._validated)
        if self.patience is not None:
            self._early_stopping = _early_stopping(self.patience, self._score, trainer, self.min_delta)
            self.evaluator.add_event_handler(Events.COMPLETED, self._maybe_stop)
        if distributed.is_distributed():
            trainer.add_event_handler(Events.EPOCH_COMPLETED, self._agree_on_stop)
        elif self.max_minutes is not None:
            self._time_limit = TimeLimit(limit_sec=int(float(self.max_minutes) * 60))
            trainer.add_event_handler(Events.ITERATION_COMPLETED, self._time_limit)
        self._started = time.monotonic()

    def _agree_on_stop(self, engine) -> None:
        """Multi-GPU: every process stops after this epoch exactly when rank 0 does (its early stopping or
        its clock), so none waits for the others in a collective that never comes."""
        out_of_time = self.max_minutes is not None and time.monotonic() - self._started >= float(self.max_minutes) * 60
        if distributed.agree(bool(engine.should_terminate) or out_of_time):
            if not engine.should_terminate:
                engine.terminate()
        else:
            engine.should_terminate = False  # rank 0 goes on: so does this process

    def _maybe_stop(self, evaluator) -> None:
        if self.trainer.state.iteration >= self.min_iterations:
            self._early_stopping(evaluator)

    def _score(self, evaluator) -> float:
        value = self.key_value(evaluator)
        if value is None:
            return -math.inf
        return -value if self.lower_is_better else value

    @staticmethod
    def key_value(evaluator) -> float | None:
        """The validator's key metric of its last run (None before the first validation)."""
        name = getattr(evaluator.state, "key_metric_name", None)
        return _number(evaluator.state.metrics.get(name)) if name else None

    @property
    def key_name(self) -> str:
        return getattr(self.evaluator.state, "key_metric_name", None) or "val_metric"

    # ---- events ----
    def _iteration_done(self, engine) -> None:
        loss = _loss(engine.state.output, self.loss_key)
        if loss is not None:
            self._losses.append(loss)

    def _validated(self, evaluator) -> None:
        self._validations_seen += 1

    def _epoch_done(self, engine) -> None:
        validated = self._validations_seen > 0
        self._validations_seen = 0
        optimizer = getattr(engine, "optimizer", None)
        lr = optimizer.param_groups[0]["lr"] if optimizer is not None and optimizer.param_groups else None
        row = {"iteration": engine.state.iteration, "epoch": engine.state.epoch,
               "train_loss": sum(self._losses) / len(self._losses) if self._losses else None,
               "learning_rate": lr, "val_metric": self.key_value(self.evaluator) if validated else None}
        self._losses = []
        self.rows.append(row)
        if validated:
            self.save()

    def _completed(self, engine) -> None:
        self.save()
        self.stop_reason = self._why_stopped(engine)
        best, final = self.best(), self.final()
        minutes = (time.monotonic() - self._started) / 60
        if self.write:
            write_summary(self.out_dir, self.stop_reason, engine.state.iteration, minutes, self.key_name, best, final)
        if best is None:
            logger.warning("training ended (%s) after %d iterations in %.1f min without a validation score",
                           self.stop_reason, engine.state.iteration, minutes)
            return
        logger.info("training ended (%s) after %d iterations, %d epochs, %.1f min: best %s %.4f at iteration "
                    "%d, final %.4f; curve: %s", self.stop_reason, engine.state.iteration, engine.state.epoch,
                    minutes, self.key_name, best["val_metric"], best["iteration"], final["val_metric"],
                    self.csv_path if self.write else "(written by rank 0)")

    def _why_stopped(self, engine) -> str:
        if self._early_stopping is not None and self._early_stopping.counter >= self.patience:
            return f"{EARLY_STOP}: no better {self.key_name} in {self.patience} validations"
        if self.max_minutes is not None and engine.state.epoch < engine.state.max_epochs:
            return f"time limit of {self.max_minutes} min"
        return f"max_epochs {engine.state.max_epochs} reached"

    # ---- results ----
    def validated_rows(self) -> list[dict]:
        return [row for row in self.rows if row["val_metric"] is not None]

    def best(self) -> dict | None:
        """The row of the best validation (the first of equals, as the checkpoint saver keeps it)."""
        rows = self.validated_rows()
        if not rows:
            return None
        pick = min if self.lower_is_better else max
        return pick(rows, key=lambda row: row["val_metric"])

    def final(self) -> dict | None:
        rows = self.validated_rows()
        return rows[-1] if rows else None

    def save(self) -> None:
        """Write the curve as CSV and PNG (rank 0 only)."""
        if not self.write or not self.rows:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with self.csv_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({k: ("" if row[k] is None else row[k]) for k in COLUMNS} for row in self.rows)
        plot_curve(self.rows, self.png_path, self.key_name)

    # ---- resume ----
    def state_dict(self) -> dict:
        early = self._early_stopping
        return {"rows": list(self.rows),
                "early_stopping": {"counter": early.counter, "best_score": early.best_score} if early else {}}

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state.get("rows", []))
        early = state.get("early_stopping") or {}
        if self._early_stopping is not None and early:
            self._early_stopping.counter = int(early["counter"])
            self._early_stopping.best_score = early["best_score"]


def _early_stopping(patience: int, score, trainer, min_delta: float):
    """ignite's EarlyStopping; its `min_delta` became `threshold` in ignite 0.5.5 (both accepted here)."""
    import inspect

    from ignite.handlers import EarlyStopping

    name = "threshold" if "threshold" in inspect.signature(EarlyStopping).parameters else "min_delta"
    return EarlyStopping(patience, score, trainer, **{name: min_delta})


def plot_curve(rows: list[dict], path: Path, metric_name: str = "val_metric") -> None:
    """Training loss (and learning rate) and the validation metric against iterations, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(9, 3.4))
    trained = [r for r in rows if r["train_loss"] is not None]
    ax_loss.plot([r["iteration"] for r in trained], [r["train_loss"] for r in trained], color="tab:blue")
    ax_loss.set(xlabel="iteration", ylabel="training loss (epoch mean)")
    if trained and min(r["train_loss"] for r in trained) > 0:
        ax_loss.set_yscale("log")  # losses fall by orders of magnitude; the flattening shows on a log axis
    with_lr = [r for r in rows if r["learning_rate"] is not None]
    if with_lr:
        ax_lr = ax_loss.twinx()
        ax_lr.plot([r["iteration"] for r in with_lr], [r["learning_rate"] for r in with_lr], color="tab:gray",
                   linestyle=":", linewidth=1)
        ax_lr.set_ylabel("learning rate", color="tab:gray")
    validated = [r for r in rows if r["val_metric"] is not None]
    ax_val.plot([r["iteration"] for r in validated], [r["val_metric"] for r in validated], marker="o",
                markersize=3, color="tab:green")
    ax_val.set(xlabel="iteration", ylabel=metric_name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def lower_is_better(best_model) -> bool:
    """The key metric's direction as the best-model saver ranks it. MONAI's CheckpointSaver keeps its
    `key_metric_negative_sign` only inside its score function, so ask that function about a score of 1."""
    checkpoint = getattr(best_model, "_key_metric_checkpoint", None)
    if checkpoint is None:
        return bool(getattr(best_model, "key_metric_negative_sign", False))
    probe = SimpleNamespace(state=SimpleNamespace(metrics=defaultdict(lambda: 1.0), key_metric_name="probe"))
    return checkpoint.score_function(probe) < 0


def write_summary(out_dir: str | Path, stop_reason: str, iterations: int, minutes: float, key: str,
                  best: dict | None, final: dict | None) -> Path:
    """<out_dir>/training_summary.json: why a run stopped, whether on a plateau, its best and final scores."""
    path = Path(out_dir) / SUMMARY
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "stop_reason": stop_reason, "plateau": stop_reason.startswith(EARLY_STOP), "iterations": int(iterations),
        "minutes": round(float(minutes), 2), "key_metric": key,
        "best": None if best is None else {"iteration": best["iteration"], "value": best["val_metric"]},
        "final": None if final is None else {"iteration": final["iteration"], "value": final["val_metric"]}},
        indent=2))
    return path


def read_curve(path: str | Path) -> list[dict]:
    """Rows of a training_curve.csv (empty cells as None), for studies, benchmarks and tests."""
    rows = []
    with Path(path).open(newline="") as handle:
        for raw in csv.DictReader(handle):
            rows.append({k: (None if raw[k] == "" else (int(float(raw[k])) if k in ("iteration", "epoch")
                                                          else float(raw[k]))) for k in COLUMNS})
    return rows
