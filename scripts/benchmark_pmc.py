"""CPU forward time per image of CellCentroidFormer, paper scale (384 px, EfficientNetV2-S) and quick.

Builds `network_def` of the bundle's inference config (with and without quick.yaml) and times the forward
pass of one 384 x 384 input (the quick network: one 128 x 128 crop), after a warm-up, in eval mode
without gradients. Also prints the parameter counts and the heads' share of them.

    .venv/bin/python scripts/benchmark_pmc.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from cellzoo.bundles import parse_config_value
from cellzoo.methods.pmc import head_fraction


def forward_seconds(network: torch.nn.Module, size: int, repeats: int) -> list[float]:
    """Seconds per forward pass of one (1, 3, size, size) input, `repeats` times after one warm-up."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    times = []
    with torch.inference_mode():
        network(x)
        for _ in range(repeats):
            start = time.perf_counter()
            network(x)
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for label, quick, size in (("paper scale", False, 384), ("quick", True, 128)):
        network = parse_config_value("pmc_detection", "inference", "network_def", quick=quick).eval()
        times = forward_seconds(network, size, args.repeats)
        params = sum(p.numel() for p in network.parameters())
        print(f"{label}: {params / 1e6:.2f} M parameters ({100 * head_fraction(network):.1f}% in the heads), "
              f"{size} x {size} input: median {statistics.median(times):.3f} s per image "
              f"(min {min(times):.3f}, {args.repeats} runs, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
