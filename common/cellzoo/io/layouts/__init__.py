"""Readers that turn public dataset folder layouts into MONAI datalist entries.

Layouts that only one method reads live in its package: `cellzoo.methods.isl.layout` (in silico labelling
fields), `cellzoo.methods.unetr.layout` (LightMyCells)."""

from cellzoo.io.layouts.cellseg import read_cellseg
from cellzoo.io.layouts.coco import read_coco
from cellzoo.io.layouts.ctc import read_ctc, read_ctc_tracks

__all__ = ["read_cellseg", "read_coco", "read_ctc", "read_ctc_tracks"]
