"""Why the benchmark's cellpose peer runs at a quick size: one training step at cellpose's own size and at the
peer's (`cellzoo.benchmarks.cellpose_peer.Rule`), on one CPU thread.

Times a batch of 8 crops (AdamW step, forward and backward) of cellpose 3.1's CPnet at its default widths
(32-256) on 224-px crops, and at the peer's widths on its 128-px crops, after one warm-up step; prints the
seconds per step and how many steps a 10-minute guard allows. Needs cellpose beside the project
(scripts/install_cellpose_reference.sh).

    .venv/bin/python scripts/benchmark_cellpose_peer.py [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from cellzoo.benchmarks.cellpose_peer import Rule, cellpose_path


def step_seconds(widths: tuple[int, ...], crop: int, batch: int, repeats: int) -> float:
    """Median seconds of one training step of a CPnet with `widths` on `batch` crops of `crop` px."""
    from cellpose.resnet_torch import CPnet

    torch.manual_seed(0)
    net = CPnet([2, *widths], 3, sz=3, max_pool=True, diam_mean=30.0)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(batch, 2, crop, crop)
    times = []
    for i in range(repeats + 1):  # the first step warms up
        start = time.perf_counter()
        loss = net(x)[0].square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    path = cellpose_path()
    if path is None:
        sys.exit("cellpose is not installed beside the project: run scripts/install_cellpose_reference.sh")
    sys.path.insert(0, str(path))
    torch.set_num_threads(args.threads)
    rule = Rule()
    for label, widths, crop in (("cellpose's own size", (32, 64, 128, 256), 224), ("the peer's size", rule.widths,
                                                                                   rule.crop)):
        seconds = step_seconds(widths, crop, rule.batch_size, args.repeats)
        print(f"{label}: widths {widths}, {crop}-px crops, batch {rule.batch_size}: {seconds:.2f} s per step, "
              f"{int(rule.max_minutes * 60 / seconds)} steps in {rule.max_minutes:g} minutes")


if __name__ == "__main__":
    main()
