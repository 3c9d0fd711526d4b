"""Public dataset folder layouts, each in one module with its reader (-> MONAI datalist entries) and its writer
(used by `cellzoo.synthetic` and the benchmarks, so a layout's file names are written down once)."""

from cellzoo.io.layouts.cellseg import read_cellseg, write_cellseg_item
from cellzoo.io.layouts.coco import read_coco, write_coco_image
from cellzoo.io.layouts.ctc import (
    frame_digits,
    read_ctc,
    read_ctc_tracks,
    tra_markers,
    write_ctc_frame,
    write_ctc_tracks,
)
from cellzoo.io.layouts.labelfree_fields import (
    read_labelfree_fields,
    write_labelfree_field,
)
from cellzoo.io.layouts.focal_series import read_lightmycells, write_lightmycells_image

__all__ = [
    "frame_digits",
    "read_cellseg",
    "read_coco",
    "read_ctc",
    "read_ctc_tracks",
    "read_labelfree_fields",
    "read_lightmycells",
    "tra_markers",
    "write_cellseg_item",
    "write_coco_image",
    "write_ctc_frame",
    "write_ctc_tracks",
    "write_labelfree_field",
    "write_lightmycells_image",
]
