"""Time MEDIAR whole-image inference per megapixel, split into network and post-processing; prints JSON.

Usage:
  python scripts/benchmark_mediar_inference.py --config quick --sizes 512,1024,2048 [--checkpoint CKPT]
  python scripts/benchmark_mediar_inference.py --config full --sizes 512 --tta false

Images are synthetic CellSeg fields (nuclear fluorescence) of the given sizes. Without a checkpoint the
network is randomly initialised and the cell-probability threshold is set so that about a third of the
pixels are foreground, so post-processing sees a realistic workload either way.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import numpy as np
import torch

from cellzoo.engines import load_weights
from cellzoo.inference import FlipTTA, WholeImagePredictor, flow_flip_inverse
from cellzoo.postprocess.flows import flows_to_instances
from cellzoo.synthetic import render_field
from cellzoo.transforms import to_three_channels

CONFIGS = {
    "quick": dict(encoder_name="mit_b0", decoder_channels=(64, 32, 32, 16, 16), decoder_pab_channels=32),
    "full": dict(encoder_name="mit_b5", decoder_channels=(1024, 512, 256, 128, 64), decoder_pab_channels=256),
}


def build_network(config: str, checkpoint: str | None, device: torch.device) -> torch.nn.Module:
    """MEDIARFormer of the bundle's quick or full (paper) size."""
    from cellzoo.methods.mediar import MEDIARFormer

    return load_weights(MEDIARFormer(**CONFIGS[config]), checkpoint).to(device).eval()


def synthetic_image(size: int, seed: int) -> torch.Tensor:
    """(3, size, size) float image in [0, 1] of nuclear fluorescence."""
    field = render_field(size=(size, size), seed=seed, modalities=("nuclear",), density="medium")
    return torch.as_tensor(to_three_channels(field["images"]["nuclear"][None].astype(np.float32)))


def time_one(predictor: WholeImagePredictor, image: torch.Tensor, threshold: float | None) -> dict:
    """Network and post-processing seconds for one image."""
    start = time.perf_counter()
    maps = predictor(image)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    network_s = time.perf_counter() - start
    # an untrained network has no calibrated cell probability: keep the top third as foreground
    cut = float(torch.quantile(maps[2].flatten()[::97], 2 / 3)) if threshold is None else threshold
    start = time.perf_counter()
    labels = flows_to_instances(maps[:2], maps[2], cellprob_threshold=cut, device=predictor.device)
    post_s = time.perf_counter() - start
    return {"network_s": network_s, "postprocess_s": post_s, "cells": int(labels.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="quick")
    parser.add_argument("--sizes", default="512,1024,2048")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--tta", default="true")
    parser.add_argument("--roi", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    network = build_network(args.config, args.checkpoint, device)
    tta = FlipTTA(inverse=flow_flip_inverse()) if args.tta.lower() == "true" else None
    predictor = WholeImagePredictor(network, roi_size=(args.roi, args.roi), overlap=0.6, tta=tta, tile_size=2048,
                                    device=device, progress=False, amp=device.type == "cuda")
    threshold = 0.0 if args.checkpoint else None
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        image = synthetic_image(size, seed=size)
        runs = [time_one(predictor, image, threshold) for _ in range(args.repeats)]
        best = min(runs, key=lambda r: r["network_s"] + r["postprocess_s"])
        mp = size * size / 1e6
        results.append({"size": size, "megapixels": mp, **best,
                        "network_s_per_mp": best["network_s"] / mp, "postprocess_s_per_mp": best["postprocess_s"] / mp,
                        "total_s_per_mp": (best["network_s"] + best["postprocess_s"]) / mp})
    report = {
        "config": args.config, "tta": tta is not None, "roi": args.roi, "device": str(device),
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "checkpoint": args.checkpoint, "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
