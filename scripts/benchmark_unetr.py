"""CPU cost of the paper-scale UNETR (bundle unetr_lightmycells, train.yaml/inference.yaml without quick.yaml).

Builds the paper's network (ViT-B/32 at 1024 x 1024: embed 768, 12 layers, 12 heads, MLP 3072; decoder 32
filters doubling per level, kernel 9; or --organelle Tubulin: 16 filters, kernel 7), checks it with MONAI's
verify_net_in_out logic (input and output shapes and dtype from metadata.json, n = 32), then times the
forward pass of one 1024 x 1024 window (eval mode, no gradients) and reports the process's peak memory.
A 2048 x 2048 image needs 9 such windows at the bundle's overlap of 0.5. Prints one JSON line.

    .venv/bin/python scripts/benchmark_unetr.py [--organelle Nucleus] [--repeats 2] [--threads 2] [--size 1024]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from cellzoo.bundles import bundle_path, config_files
from cellzoo.io import load_json

BUNDLE = "unetr_lightmycells"


def paper_network(organelle: str, size: int) -> torch.nn.Module:
    """network_def of inference.yaml (no quick.yaml), with the organelle's decoder and roi `size`."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_files(BUNDLE, "inference"))
    parser.update({"organelle": organelle, "roi_size": size})
    return parser.get_parsed_content("network_def")


def check_declared_format(network: torch.nn.Module, size: int) -> None:
    """The checks of monai.bundle verify_net_in_out: metadata's input channels and dtype give its output shape."""
    meta = load_json(bundle_path(BUNDLE) / "configs" / "metadata.json")["network_data_format"]
    inputs, outputs = meta["inputs"]["image"], meta["outputs"]["pred"]
    with torch.no_grad():
        out = network(torch.zeros(1, inputs["num_channels"], size, size, dtype=getattr(torch, inputs["dtype"])))
    assert out.shape == (1, outputs["num_channels"], size, size) and out.dtype == getattr(torch, outputs["dtype"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--organelle", default="Nucleus")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    network = paper_network(args.organelle, args.size).eval()
    build_s = time.perf_counter() - started
    check_declared_format(network, args.size)  # also the warm-up run
    x = torch.randn(1, 1, args.size, args.size)
    times = []
    with torch.no_grad():
        for _ in range(args.repeats):
            started = time.perf_counter()
            network(x)
            times.append(time.perf_counter() - started)
    vit = sum(p.numel() for p in network.vit.parameters())
    total = sum(p.numel() for p in network.parameters())
    print(json.dumps({
        "bundle": BUNDLE, "organelle": args.organelle, "input": [1, 1, args.size, args.size],
        "patch_size": network.patch_size, "skip_blocks": list(network.skip_blocks),
        "parameters_M": round(total / 1e6, 1), "vit_parameters_M": round(vit / 1e6, 1),
        "build_s": round(build_s, 1), "forward_s": [round(t, 2) for t in times], "threads": args.threads,
        "peak_rss_GiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "declared_format_verified": True,
    }))


if __name__ == "__main__":
    main()
