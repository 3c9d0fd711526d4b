"""Network time per megapixel of a bundle in PyTorch and in onnxruntime on the CPU, at the bundle's inference
settings (its inference.yaml inferer: window, overlap; TTA off), with the outputs compared.

The ONNX graph is the one `cellzoo export-bioimageio` writes (`cellzoo.export.bioimageio.write_weights`), of
the network with random weights (seed 0): time does not depend on the weights. The image is a synthetic
field of --size x --size px, normalised as the bundle normalises it. Prints one JSON line per bundle.

    .venv/bin/python scripts/benchmark_onnx.py --bundles mediar_cellseg,isl_segmentation,pmc_detection,unetr_lightmycells [--paper]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cellzoo.bundles import parse_config_value
from cellzoo.export.bioimageio import make_test_input, plan_export, reference_preprocessing, write_weights
from cellzoo.inference import OnnxNetwork


def image(plan, size: int) -> torch.Tensor:
    """A (1, C, size, size) synthetic image, normalised with the bundle's declared preprocessing."""
    window = plan.window
    plan.window = size  # the synthetic field at the measured size
    raw = make_test_input(plan, seed=1)
    plan.window = window
    return torch.from_numpy(reference_preprocessing(plan.declaration["input"].get("preprocessing", []), raw))


def seconds(inferer, network, x: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor]:
    """Median seconds of `repeats` whole-image predictions (after one warm-up) and the last output."""
    times = []
    with torch.inference_mode():
        out = inferer(x, network)
        for _ in range(repeats):
            started = time.perf_counter()
            out = inferer(x, network)
            times.append(time.perf_counter() - started)
    return float(np.median(times)), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", default="mediar_cellseg,isl_segmentation,pmc_detection,unetr_lightmycells")
    parser.add_argument("--paper", action="store_true", help="paper-scale networks (default: quick.yaml's)")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for bundle in args.bundles.split(","):
        plan = plan_export(bundle, None, quick=not args.paper)
        x = image(plan, args.size)
        with tempfile.TemporaryDirectory() as folder:
            example = x[..., :plan.window, :plan.window]
            files = write_weights(plan, example, Path(folder))
            onnx = OnnxNetwork(files["onnx"], threads=args.threads)
            inferer = parse_config_value(bundle, "inference", "inferer", quick=not args.paper, tta=False)
            torch_s, torch_out = seconds(inferer, plan.network, x, args.repeats)
            onnx_s, onnx_out = seconds(inferer, onnx, x, args.repeats)
        megapixels = args.size ** 2 / 1e6
        print(json.dumps({"bundle": bundle, "configs": "paper" if args.paper else "quick", "size": args.size,
                          "window": plan.window, "torch_s_per_mp": round(torch_s / megapixels, 3),
                          "onnxruntime_s_per_mp": round(onnx_s / megapixels, 3), "speedup": round(torch_s / onnx_s, 2),
                          "max_abs_difference": float((torch_out - onnx_out).abs().max()),
                          "output_range": float(torch_out.abs().max()), "threads": args.threads}), flush=True)


if __name__ == "__main__":
    main()
