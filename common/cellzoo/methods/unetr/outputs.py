"""What UNETR inference writes: the predicted organelle of each input plane, a float32 OME-TIFF of the same
field, with the input's physical pixel size."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from cellzoo.io import file_stem, write_ome_tiff
from cellzoo.io.physical import read_physical_size_um

__all__ = ["SaveOrganelled", "prediction_path"]

logger = logging.getLogger(__name__)


def prediction_path(output_dir: str | Path, source: str | Path, organelle: str, folder: str = "") -> Path:
    """`<output_dir>/<folder>/<input stem>_<organelle>.ome.tiff` (folder: the input's Study_N, if any)."""
    return Path(output_dir) / folder / f"{file_stem(source)}_{organelle}.ome.tiff"


class SaveOrganelled(MapTransform):
    """Write each item's (1, H, W) prediction as `prediction_path(...)`, float32, physical size of `path_key`'s file."""

    def __init__(self, keys: KeysCollection, output_dir: str | Path, organelle: str, path_key: str = "path",
                 folder_key: str = "folder", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.output_dir, self.organelle = Path(output_dir), organelle
        self.path_key, self.folder_key = path_key, folder_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        source = Path(str(d[self.path_key]))
        target = prediction_path(self.output_dir, source, self.organelle, str(d.get(self.folder_key, "") or ""))
        for key in self.key_iterator(d):
            image = np.asarray(torch.as_tensor(d[key]).detach().float().cpu())[0]
            write_ome_tiff(target, image.astype(np.float32), "YX", physical_size_um=read_physical_size_um(source))
            logger.info("wrote %s", target)
        return d
