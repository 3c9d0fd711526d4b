"""CPU performance of a bundle: whole-image inference time per megapixel (network vs post-processing) by
image size, training throughput and peak memory, for its quick or its paper-scale configs.

Every measurement runs the bundle's own configs (inference.yaml, train.yaml) through MONAI's ConfigWorkflow
on synthetic data in the bundle's layout (study.yaml `data`), each in a fresh process so that its peak
resident memory is its own. Network time is the time spent in the evaluator's inferer (sliding windows,
TTA, ensembles, tiling), post-processing the time from the end of its forward pass to the end of its
iteration (MONAI's postprocessing: maps -> instances or boxes, and writing the outputs); reading and
batching make up the rest of the total. Training throughput is samples
per second over the iterations after the first (warm-up), with the config's batch size (paper scale:
--batch-size, default 1, so that a CPU step stays within minutes). Weights are random unless --checkpoint
is given: post-processing time then depends on what an untrained network predicts (say so when quoting it).

    .venv/bin/python scripts/benchmark_performance.py --bundle mediar_cellseg --sizes 512,1024,2048,4096
    .venv/bin/python scripts/benchmark_performance.py --bundle mediar_cellseg --paper --sizes 512
Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _workflow(bundle: str, config: str, quick: bool, kind: str, **overrides):
    from monai.bundle import ConfigWorkflow

    from cellzoo.bundles import bundle_path, config_files

    meta = str(bundle_path(bundle) / "configs" / "metadata.json")
    flow = ConfigWorkflow(config_file=config_files(bundle, config, quick), meta_file=meta, workflow_type=kind,
                          **overrides)
    flow.initialize()
    return flow


def _synthetic(bundle: str, folder: Path, n: int, size: int) -> Path:
    from cellzoo.studies import load_study
    from cellzoo.synthetic import synthesize

    return synthesize(load_study(bundle).data["layout"], n, folder, seed=0, size=(size, size))


class Timer:
    """Wraps a callable and sums the seconds spent in it."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started


def measure_inference(bundle: str, quick: bool, size: int, checkpoint: str | None, tmp: Path) -> dict:
    from ignite.engine import Events
    from monai.engines.utils import IterationEvents

    from cellzoo.studies import load_study

    data = _synthetic(bundle, tmp / "data", 1, size) / load_study(bundle).data.get("inference_input", "")
    if checkpoint is None:
        from cellzoo.bundles import parse_config_value

        checkpoint = str(tmp / "random.pt")
        torch.save(parse_config_value(bundle, "inference", "network_def", quick=quick).state_dict(), checkpoint)
    flow = _workflow(bundle, "inference", quick, "infer", bundle_root=str(tmp), input_dir=str(data),
                     checkpoints=[checkpoint], output_dir=str(tmp / "pred"))
    evaluator = flow.parser.get_parsed_content("evaluator")
    evaluator.inferer = network = Timer(evaluator.inferer)
    # MONAI runs the postprocessing on MODEL_COMPLETED, between FORWARD_COMPLETED and ITERATION_COMPLETED
    marks: dict[str, list[float]] = {"forward": [], "done": []}
    evaluator.add_event_handler(IterationEvents.FORWARD_COMPLETED, lambda _: marks["forward"].append(time.perf_counter()))
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda _: marks["done"].append(time.perf_counter()))
    started = time.perf_counter()
    flow.run()
    total = time.perf_counter() - started
    post = sum(done - forward for forward, done in zip(marks["forward"], marks["done"]))
    megapixels = size * size / 1e6
    return {"measure": "inference", "size": size, "network_s_per_mp": round(network.seconds / megapixels, 3),
            "postprocess_s_per_mp": round(post / megapixels, 3), "total_s_per_mp": round(total / megapixels, 3),
            "total_s": round(total, 2)}


def measure_training(bundle: str, quick: bool, iterations: int, batch_size: int | None, tmp: Path) -> dict:
    from ignite.engine import Events

    from cellzoo.bundles import parse_config_value

    roi = int(parse_config_value(bundle, "train", "roi_size", quick=quick))
    batch = int(batch_size or parse_config_value(bundle, "train", "batch_size", quick=quick))
    data = _synthetic(bundle, tmp / "data", 4, roi)
    flow = _workflow(bundle, "train", quick, "train", bundle_root=str(tmp), dataset_dir=str(data),
                     output_dir=str(tmp / "runs"), ckpt_dir=str(tmp / "models"), batch_size=batch,
                     samples_per_epoch=batch * (iterations + 1), max_epochs=1, val_interval=10, n_folds=2,
                     num_workers=0)
    trainer = flow.parser.get_parsed_content("train#trainer")
    stamps: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: stamps.append(time.perf_counter()))
    trainer.run()
    seconds = stamps[-1] - stamps[0]  # after the first iteration (warm-up: caches, allocator)
    return {"measure": "training", "roi_size": roi, "batch_size": batch, "iterations": len(stamps) - 1,
            "samples_per_s": round(batch * (len(stamps) - 1) / seconds, 3), "s_per_iteration": round(seconds / (len(stamps) - 1), 3)}


def one(args) -> None:
    """One measurement in this process; prints its JSON line with this process's peak memory."""
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="cellzoo_perf_") as folder:
        tmp = Path(folder)
        if args.measure == "training":
            result = measure_training(args.bundle, not args.paper, args.iterations, args.batch_size, tmp)
        else:
            result = measure_inference(args.bundle, not args.paper, args.size, args.checkpoint, tmp)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"bundle": args.bundle, "configs": "paper" if args.paper else "quick", **result,
                      "threads": args.threads, "peak_rss_GiB": round(peak, 2)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--paper", action="store_true", help="the paper-scale configs (default: quick.yaml)")
    parser.add_argument("--sizes", default="512,1024,2048,4096", help="square image sizes for inference")
    parser.add_argument("--iterations", type=int, default=3, help="timed training iterations (after one warm-up)")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch (default: the config's; paper: 1)")
    parser.add_argument("--checkpoint", default=None, help="trained weights (default: random)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--measure", choices=("inference", "training"), help=argparse.SUPPRESS)  # one child
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return one(args)
    if args.paper and args.batch_size is None:
        args.batch_size = 1
    base = [sys.executable, __file__, "--bundle", args.bundle, "--threads", str(args.threads), "--iterations",
            str(args.iterations)] + (["--paper"] if args.paper else []) + \
        (["--checkpoint", args.checkpoint] if args.checkpoint else []) + \
        (["--batch-size", str(args.batch_size)] if args.batch_size else [])
    children = [base + ["--measure", "inference", "--size", s] for s in args.sizes.split(",")]
    if not args.skip_training:
        children.append(base + ["--measure", "training"])
    for command in children:
        result = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        print(lines[-1] if result.returncode == 0 and lines else
              json.dumps({"bundle": args.bundle, "failed": command[-2:], "error": result.stderr[-400:]}), flush=True)


if __name__ == "__main__":
    main()
