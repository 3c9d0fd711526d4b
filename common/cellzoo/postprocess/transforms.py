"""MONAI dictionary transforms that turn network maps into instances and write them, inside engines.

`MapsToInstancesd` is the base of every maps -> instances step (flows here, a method's own maps in its
package); `SaveCellOutputsd` and `SaveFluorescenced` write the files of an inference run.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from cellzoo.io import file_stem, write_ome_tiff
from cellzoo.postprocess.flows import flows_to_instances, large_image_tile
from cellzoo.postprocess.outputs import write_cell_outputs

logger = logging.getLogger(__name__)


class MapsToInstancesd(MapTransform):
    """Replace the network maps under `keys` by (1, H, W) int32 instance labels made by `to_labels`.

    Keyword arguments are kept in `postprocess_args` for the subclass's post-processing function.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **postprocess_args):
        super().__init__(keys, allow_missing_keys)
        self.postprocess_args = postprocess_args

    def to_labels(self, maps: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = torch.from_numpy(self.to_labels(torch.as_tensor(d[key]).detach()))[None]
        return d


class FlowsToInstancesd(MapsToInstancesd):
    """(3, H, W) [flow_y, flow_x, cellprob logit] maps (MEDIAR) -> instances by flow following.

    Keyword arguments go to `flows_to_instances` (thresholds, flow_scale, niter, min_size ...). Unless
    `tile_size` is given, images above 25 MP are post-processed in 2000-px tiles (MEDIAR's setting).
    """

    def to_labels(self, maps: torch.Tensor) -> np.ndarray:
        args = {"tile_size": large_image_tile(maps.shape), **self.postprocess_args}
        return flows_to_instances(maps[:2], maps[2], device=maps.device, **args)


class SaveCellOutputsd(MapTransform):
    """Write the label TIFF (+ per-cell CSV and overlay) of each item: the end of an inference engine.

    `keys` holds (1, H, W) instance labels, `image_key` the raw (C, H, W) image the cells are measured on
    and `path_key` the source file, whose stem names the outputs (see cellzoo.postprocess.outputs).
    """

    def __init__(self, keys: KeysCollection, output_dir: str | Path, image_key: str = "raw", path_key: str = "path",
                 write_extras: bool = True, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.image_key, self.path_key, self.write_extras = image_key, path_key, write_extras

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        path = Path(str(d[self.path_key]))
        image = np.asarray(torch.as_tensor(d[self.image_key]).cpu())
        for key in self.key_iterator(d):
            labels = np.asarray(torch.as_tensor(d[key]).cpu())[0]
            write_cell_outputs(file_stem(path), labels, image, self.output_dir, self.write_extras)
            logger.info("%s: %d cells", path.name, int(labels.max(initial=0)))
        return d


class SaveFluorescenced(MapTransform):
    """Write each item's predicted fluorescence, (1, H, W) float32, as `<output_dir>/<stem>_<name>.ome.tif`."""

    def __init__(self, keys: KeysCollection, output_dir: str | Path, name: str = "fluorescence",
                 path_key: str = "path", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.output_dir, self.name, self.path_key = Path(output_dir), name, path_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        stem = file_stem(Path(str(d[self.path_key])))
        for key in self.key_iterator(d):
            image = np.asarray(torch.as_tensor(d[key]).detach().float().cpu())[0]
            path = write_ome_tiff(self.output_dir / f"{stem}_{self.name}.ome.tif", image, "YX")
            logger.info("wrote %s", path)
        return d
