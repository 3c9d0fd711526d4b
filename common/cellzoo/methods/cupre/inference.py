"""Whole-image detection as a MONAI Inferer: tiles with overlap for images larger than a tile, the instances
of all tiles (and of every network of an ensemble) merged into one set per image.

A detector's output is a set of instances, not a map, so MONAI's sliding-window blending does not apply.
Each tile is predicted with `overlap` pixels of context around its core (the platform's `halo_tiles`); an
instance belongs to the tile whose core holds its box centre, which keeps exactly one copy of a cell seen
by two tiles, and a final non-maximum suppression removes what is left of cells cut by a core border.

The detector caps its output per forward pass (`detections_per_img`, here `tile_cap`); the image's cap
follows the tiling (tile_cap per tile), so a large image is never truncated to one tile's worth of cells,
and a warning names every tile whose detections reached the detector's cap (cells beyond it are lost).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from monai.inferers import Inferer
from torch import Tensor, nn
from torchvision.ops import boxes as box_ops

from cellzoo.inference import Tile, halo_tiles
from cellzoo.methods.cupre.masks import empty_detections

logger = logging.getLogger(__name__)

__all__ = ["TiledDetectionInferer", "merge_detections"]

FIELDS = ("boxes", "scores", "labels", "mask_probs")


def merge_detections(parts: Sequence[dict], nms_thresh: float = 0.5, max_detections: int | None = None) -> dict:
    """Concatenated detections, then class-wise NMS and the best `max_detections` by score (None: all)."""
    parts = [p for p in parts if len(p["boxes"])]
    if not parts:
        return empty_detections()
    merged = {key: torch.cat([p[key] for p in parts]) for key in FIELDS}
    keep = box_ops.batched_nms(merged["boxes"], merged["scores"], merged["labels"], nms_thresh)[:max_detections]
    return {key: value[keep] for key, value in merged.items()}


class TiledDetectionInferer(Inferer):
    """Run a detector (or an `nn.ModuleList` ensemble) on whole images of any size.

    `inputs` is a (B, C, H, W) tensor or a list of (C, H, W) tensors; the result is one dict per image with
    `boxes` (image coordinates), `scores`, `labels` and box-relative `mask_probs`, on the CPU. Images with
    both sides <= `tile_size` are predicted whole; larger ones in tiles of at most `tile_size` px whose
    cores (tile_size - overlap) tile the image, `batch_size` tiles per forward pass. `tile_cap` is the
    detector's own cap per forward pass (its `detections_per_img`): reaching it is warned about. The merged
    image keeps at most `max_detections` (None: tile_cap per tile; no cap when both are None).
    """

    def __init__(self, tile_size: int = 512, overlap: int = 64, batch_size: int = 4, nms_thresh: float = 0.5,
                 max_detections: int | None = None, tile_cap: int | None = None):
        super().__init__()
        if not 0 <= overlap < tile_size:
            raise ValueError(f"need 0 <= overlap < tile_size, got overlap {overlap}, tile_size {tile_size}")
        self.tile_size, self.overlap, self.batch_size = int(tile_size), int(overlap), int(batch_size)
        self.nms_thresh = float(nms_thresh)
        self.max_detections = None if max_detections is None else int(max_detections)
        self.tile_cap = None if tile_cap is None else int(tile_cap)

    def __call__(self, inputs: Tensor | Sequence[Tensor], network: nn.Module, *args, **kwargs) -> list[dict]:
        networks = list(network) if isinstance(network, nn.ModuleList) else [network]
        was_training = [n.training for n in networks]
        for n in networks:
            n.eval()
        try:
            with torch.no_grad():
                return [self.predict(image, networks) for image in inputs]
        finally:
            for n, training in zip(networks, was_training):
                n.train(training)

    def tiles(self, shape: tuple[int, int]) -> list:
        """The tiles of an image: one when it fits `tile_size`, else cores of tile_size - overlap with halos."""
        if max(shape) <= self.tile_size:
            whole = tuple(slice(0, s) for s in shape)
            return [Tile(whole, whole)]
        return halo_tiles(shape, self.tile_size - self.overlap, self.overlap // 2)

    def predict(self, image: Tensor, networks: Sequence[nn.Module]) -> dict:
        """Detections of one (C, H, W) image: per network and tile, kept where the box centre is in the core."""
        shape = tuple(int(s) for s in image.shape[-2:])
        tiles = self.tiles(shape)
        if len(tiles) > 1:
            logger.info("image %s: %d tiles of <= %d px", shape, len(tiles), self.tile_size)
        parts = []
        for network in networks:
            for start in range(0, len(tiles), self.batch_size):
                chunk = tiles[start:start + self.batch_size]
                outputs = network([image[(slice(None), *t.context)] for t in chunk])
                self._warn_capped(outputs, chunk, shape)
                parts += [self._in_core(out, t) for out, t in zip(outputs, chunk)]
        if len(parts) == 1:
            return {key: value.cpu() for key, value in parts[0].items()}
        return merge_detections(parts, self.nms_thresh, self.image_cap(len(tiles)))

    def image_cap(self, n_tiles: int) -> int | None:
        """The most detections one image keeps: `max_detections`, else the detector's cap per tile."""
        if self.max_detections is not None:
            return self.max_detections
        return None if self.tile_cap is None else self.tile_cap * n_tiles

    def _warn_capped(self, outputs: Sequence[dict], tiles: Sequence, shape: tuple[int, int]) -> None:
        if self.tile_cap is None:
            return
        for output, tile in zip(outputs, tiles):
            if len(output["boxes"]) >= self.tile_cap:
                logger.warning("image %s, tile at (y %d, x %d): %d detections, the detector's cap "
                               "(network_def#detections_per_img); cells beyond it are lost: raise the cap or use "
                               "smaller tiles (tile_size)", shape, tile.context[0].start, tile.context[1].start,
                               len(output["boxes"]))

    @staticmethod
    def _in_core(output: dict, tile) -> dict:
        """A tile's detections in image coordinates, only those whose box centre lies in the tile's core."""
        y0, x0 = tile.context[0].start, tile.context[1].start
        boxes = output["boxes"].cpu() + torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        (ys, xs) = tile.core
        inside = (cy >= ys.start) & (cy < ys.stop) & (cx >= xs.start) & (cx < xs.stop)
        return {"boxes": boxes[inside], "scores": output["scores"].cpu()[inside],
                "labels": output["labels"].cpu()[inside], "mask_probs": output["mask_probs"].cpu()[inside]}
