"""Readers that turn public dataset folder layouts into MONAI datalist entries."""

from cellzoo.io.layouts.cellseg import read_cellseg
from cellzoo.io.layouts.coco import (
    annotation_to_mask,
    coco_to_label_image,
    label_image_to_coco,
    load_coco_json,
    read_coco,
)
from cellzoo.io.layouts.ctc import read_ctc, read_ctc_tracks
from cellzoo.io.layouts.isl import isl_datalist, read_isl, select_channels
from cellzoo.io.layouts.lightmycells import read_lightmycells

__all__ = [
    "annotation_to_mask",
    "coco_to_label_image",
    "label_image_to_coco",
    "load_coco_json",
    "read_cellseg",
    "read_coco",
    "read_ctc",
    "read_ctc_tracks",
    "isl_datalist",
    "read_isl",
    "read_lightmycells",
    "select_channels",
]
