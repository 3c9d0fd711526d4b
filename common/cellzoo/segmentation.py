"""Segment folders of images with flow-predicting networks (MEDIAR-style) and write the field's outputs.

Per image, under the output folder: `labels/<stem>_label.tiff` (instance labels, the NeurIPS CellSeg
naming, so `cellzoo evaluate instance --pred OUT/labels --gt DATA/labels` scores them),
`measurements/<stem>_cells.csv` (per-cell table) and `overlays/<stem>_overlay.png` (outlines on the image). Images of any size, dtype and channel count are accepted;
very large images are predicted in tiles with a halo and post-processed in tiles, so memory stays bounded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cellzoo.evaluation import file_stem, list_images
from cellzoo.inference import FlipTTA, WholeImagePredictor, flow_flip_inverse
from cellzoo.io import read_image
from cellzoo.postprocess.flows import flows_to_instances, large_image_tile
from cellzoo.postprocess.outputs import write_cell_outputs
from cellzoo.transforms.mediar_augment import as_cyx

logger = logging.getLogger(__name__)

class FlowSegmenter:
    """Networks -> [flow_y, flow_x, cellprob] maps -> instances, for single images or whole folders."""

    def __init__(
        self,
        networks: nn.Module | Sequence[nn.Module],
        preprocess: Callable[[dict], dict],  # {"image": (C, H, W) array} -> {"image": (3, H, W) in [0, 1]}
        roi_size: int = 512,
        overlap: float = 0.6,
        tta: bool = True,
        sw_batch_size: int = 4,
        predict_tile_size: int | None = 2048,
        flow_scale: float = 5.0,
        cellprob_threshold: float = 0.0,
        flow_threshold: float = 0.4,
        min_size: int = 16,
        niter: int = 200,
        amp: bool = False,
        device: torch.device | str | None = None,
        progress: bool = True,
    ):
        self.preprocess = preprocess
        flips = FlipTTA(inverse=flow_flip_inverse()) if tta else None
        self.predictor = WholeImagePredictor(
            networks, roi_size=(roi_size, roi_size), overlap=overlap, mode="gaussian", sw_batch_size=sw_batch_size,
            tta=flips, tile_size=predict_tile_size, device=device, amp=amp, progress=False,
        )
        self.flow_scale = flow_scale
        self.postprocess_args = dict(cellprob_threshold=cellprob_threshold, flow_threshold=flow_threshold,
                                     min_size=min_size, niter=niter)
        self.progress = progress
        self.timings: list[dict] = []

    def predict_maps(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) preprocessed image -> (3, H, W) [flow_y, flow_x, cellprob logit] on the CPU."""
        return self.predictor(image)

    def maps_to_labels(self, maps: torch.Tensor) -> np.ndarray:
        """Network maps -> int32 instance labels; images above 25 MP are post-processed in tiles."""
        tile = large_image_tile(maps.shape[-2:])
        # The network learns flow_scale x the unit flows (MEDIAR's loss); post-processing divides it out.
        return flows_to_instances(maps[:2], maps[2], flow_scale=self.flow_scale, tile_size=tile,
                                  device=self.predictor.device, **self.postprocess_args)

    def segment_file(self, path: str | Path) -> tuple[np.ndarray, np.ndarray, str]:
        """Read and segment one image file: returns (labels, raw image, its axes)."""
        raw, axes = read_image(path)  # read once: the raw image also feeds the measurements and overlay
        image = torch.as_tensor(np.asarray(self.preprocess({"image": as_cyx(raw, axes)})["image"]), dtype=torch.float32)
        started = time.perf_counter()
        maps = self.predict_maps(image)
        network_s = time.perf_counter() - started
        labels = self.maps_to_labels(maps)
        self.timings.append({"file": str(path), "pixels": int(maps.shape[-1] * maps.shape[-2]),
                             "network_s": network_s, "postprocess_s": time.perf_counter() - started - network_s})
        return labels, raw, axes

    def run(self, inputs: str | Path | Sequence[str | Path], output_dir: str | Path,
            write_extras: bool = True) -> list[Path]:
        """Segment every image of a folder (or a list of files); write labels (+ CSV and overlay) to `output_dir`."""
        # list_images also refuses two files with one stem, whose outputs would overwrite each other
        files = list(list_images(inputs).values()) if isinstance(inputs, (str, Path)) else [Path(p) for p in inputs]
        output_dir = Path(output_dir)
        written = []
        for path in tqdm(files, desc="segment", unit="image", disable=not self.progress):
            labels, raw, axes = self.segment_file(path)
            written.append(self.write_outputs(path, labels, raw, axes, output_dir, write_extras))
            logger.info("%s: %d cells", path.name, int(labels.max()))
        return written

    @staticmethod
    def write_outputs(path: Path, labels: np.ndarray, raw: np.ndarray, axes: str, output_dir: Path,
                      write_extras: bool = True) -> Path:
        """labels/<stem>_label.tiff and, with extras, measurements/<stem>_cells.csv and overlays/<stem>_overlay.png."""
        return write_cell_outputs(file_stem(Path(path)), labels, as_cyx(raw, axes), output_dir, write_extras)
