"""Where a run's time goes, per iteration: waiting for data, the network, what follows the forward pass.

`StepTimer` is an ignite handler for any MONAI trainer or evaluator (scripts/gpu_check.py appends it to a
bundle's config). It times each iteration from ignite's batch events and MONAI's FORWARD_COMPLETED event,
synchronising CUDA first so that asynchronous kernels are counted where they run, skips the first `warmup`
iterations (cuDNN autotuning, allocator growth), and writes one JSON summary at the end: iterations,
samples/s, s/iteration, the share of time spent waiting for data, network seconds per iteration and the
seconds after the forward pass (post-processing in evaluation; in training the backward pass and the
optimiser step), the first and last training loss and the peak CUDA memory.

Written here rather than taken from ignite's `BasicTimeProfiler`, which splits data from processing time
too, because that one neither synchronises CUDA, nor leaves out warm-up iterations, nor sees MONAI's
forward event.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

__all__ = ["StepTimer"]


def _now() -> float:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


class StepTimer:
    """Time every iteration of the engine it is attached to; write the summary to `out` (JSON) at the end."""

    def __init__(self, out: str | Path, warmup: int = 2, loss_key: str = "loss"):
        self.out, self.warmup, self.loss_key = Path(out), int(warmup), loss_key
        self.rows: list[dict] = []
        self._marks: dict[str, float] = {}

    def attach(self, engine) -> None:
        from ignite.engine import Events
        from monai.engines.utils import IterationEvents

        engine.add_event_handler(Events.GET_BATCH_STARTED, self._mark, "batch_started")
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._mark, "batch_completed")
        engine.add_event_handler(Events.ITERATION_STARTED, self._mark, "iteration_started")
        try:  # MONAI's engines register these; a plain ignite engine has no network/post-processing split
            engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self._mark, "forward_completed")
        except ValueError:
            pass
        # after the engine's own ITERATION_COMPLETED handlers (MONAI's post-processing runs there)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_done)
        engine.add_event_handler(Events.COMPLETED, self._write)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def _mark(self, engine, name: str) -> None:
        self._marks[name] = _now()

    def _iteration_done(self, engine) -> None:
        end, marks = _now(), self._marks
        start = marks.get("iteration_started", end)
        row = {"data_s": marks.get("batch_completed", start) - marks.get("batch_started", start),
               "iteration_s": end - start, "batch": _batch_size(engine.state.batch), "loss": _loss(engine, self.loss_key)}
        if "forward_completed" in marks:
            # MONAI runs decollation and post-processing on MODEL_COMPLETED, before this handler's mark of it:
            # everything after the forward pass is post-processing (and, in training, the backward pass)
            row["network_s"] = marks["forward_completed"] - start
            row["post_s"] = end - marks["forward_completed"]
        self.rows.append(row)
        self._marks = {}

    def summary(self) -> dict:
        timed = self.rows[self.warmup:] or self.rows
        total = sum(r["iteration_s"] + r["data_s"] for r in timed)
        losses = [r["loss"] for r in self.rows if r["loss"] is not None]
        out = {"iterations": len(self.rows), "timed_iterations": len(timed),
               "s_per_iteration": statistics.fmean(r["iteration_s"] + r["data_s"] for r in timed) if timed else None,
               "samples_per_s": sum(r["batch"] for r in timed) / total if total > 0 else None,
               "data_wait_share": sum(r["data_s"] for r in timed) / total if total > 0 else None,
               "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
               "peak_cuda_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None}
        if timed and "network_s" in timed[0]:
            out["network_s_per_iteration"] = statistics.fmean(r["network_s"] for r in timed)
            out["post_s_per_iteration"] = statistics.fmean(r["post_s"] for r in timed)
        return out

    def _write(self, engine) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.summary(), indent=1))


def _batch_size(batch) -> int:
    """Images in a batch: a dict of (B, ...) tensors, a list of images (detection), or a tensor."""
    if isinstance(batch, dict):
        batch = next((v for v in batch.values() if isinstance(v, (torch.Tensor, list))), [])
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    return len(batch) if isinstance(batch, (list, tuple)) else 1


def _loss(engine, key: str) -> float | None:
    output = engine.state.output
    if isinstance(output, list) and output and isinstance(output[0], dict):
        output = output[0]
    value = output.get(key) if isinstance(output, dict) else None
    return float(value) if isinstance(value, (torch.Tensor, float, int)) else None
