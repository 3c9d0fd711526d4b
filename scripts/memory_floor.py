"""The GPU memory every training process needs before any activation: fp32 weights, gradients and optimiser
state of each bundle's paper-scale network, counted from the network its config builds (docs/gpu.md,
"Memory"). Activations come on top; scripts/gpu_check.py measures the peak on a GPU.

    .venv/bin/python scripts/memory_floor.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "common"))

# (bundle, config): CUPre's train config sizes its heads from the data's categories, so its network is the
# inference config's (background + cell), as fine-tuned
CONFIGS = [("mediar_cellseg", "train"), ("unetr_lightmycells", "train"), ("unetr_lightmycells", "pretrain"),
           ("cupre_instance_seg", "inference"), ("pmc_detection", "train"), ("isl_segmentation", "train")]
# bytes per trainable parameter: weight + gradient + optimiser state (Adam/AdamW: two moments; SGD: momentum)
STATE_BYTES = {"Adam": 16, "AdamW": 16, "SGD": 12}


def optimizer_name(bundle: str, config: str) -> str:
    from monai.bundle import ConfigParser

    from cellzoo.bundles import config_files

    parser = ConfigParser()
    parser.read_config(config_files(bundle, "train" if config == "inference" else config))
    return str(parser.get("optimizer#_target_")).rsplit(".", 1)[-1]


def main() -> None:
    from cellzoo.bundles import parse_config_value

    print("| config | parameters | trainable | optimiser | weights + gradients + optimiser |")
    print("| --- | --- | --- | --- | --- |")
    for bundle, config in CONFIGS:
        network = parse_config_value(bundle, config, "network_def")
        total = sum(p.numel() for p in network.parameters())
        trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
        optimizer = optimizer_name(bundle, config)
        gib = (trainable * STATE_BYTES[optimizer] + (total - trainable) * 4) / 2**30
        print(f"| {bundle} {config} | {total / 1e6:.1f} M | {trainable / 1e6:.1f} M | {optimizer} | {gib:.2f} GiB |",
              flush=True)


if __name__ == "__main__":
    main()
