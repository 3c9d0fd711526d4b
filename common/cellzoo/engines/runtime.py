"""The process-wide settings every train config starts with: seeds and the GPU speed switches.

MONAI's `set_determinism` seeds every generator and also turns cuDNN's autotuner off and its deterministic
algorithms on, which costs a convolutional network a good part of its GPU speed. Here repeatability is a
choice (`deterministic`), the autotuner (`cudnn_benchmark`) is on otherwise, and fp32 matrix products may
use TF32 tensor cores (`float32_matmul_precision: high`, torch's name). On the CPU only the seeds matter.
See docs/gpu.md.
"""

from __future__ import annotations

import logging

import torch
from monai.utils import set_determinism

from cellzoo.engines.distributed import rank_seed

__all__ = ["setup_run"]

logger = logging.getLogger(__name__)
PRECISIONS = ("highest", "high", "medium")


def setup_run(seed: int | None = 0, deterministic: bool = False, cudnn_benchmark: bool | None = None,
              float32_matmul_precision: str = "high") -> None:
    """Seed this process (its rank's own seed in a multi-GPU run) and set the cuDNN and TF32 switches.

    `cudnn_benchmark` None means "on unless deterministic"; asking for both is refused, as the autotuner
    picks algorithms by timing and so breaks repeatability."""
    if float32_matmul_precision not in PRECISIONS:
        raise ValueError(f"float32_matmul_precision must be one of {PRECISIONS}, got {float32_matmul_precision!r}")
    if cudnn_benchmark is None:
        cudnn_benchmark = not deterministic
    if deterministic and cudnn_benchmark:
        raise ValueError("deterministic: true needs cudnn_benchmark: false (the autotuner is not repeatable)")
    set_determinism(seed=None if seed is None else rank_seed(seed))
    torch.backends.cudnn.deterministic = bool(deterministic)
    torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
    if torch.cuda.is_available():  # on the CPU "medium" would mean bfloat16 products: CPU runs stay fp32
        torch.set_float32_matmul_precision(float32_matmul_precision)
        torch.backends.cudnn.allow_tf32 = float32_matmul_precision != "highest"
        logger.info("cuDNN benchmark %s, deterministic %s, float32 matmul precision %s",
                    cudnn_benchmark, deterministic, float32_matmul_precision)
