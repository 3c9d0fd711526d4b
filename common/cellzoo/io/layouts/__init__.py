"""Readers that turn public dataset folder layouts into MONAI datalist entries, one module per layout:
CellSeg (MEDIAR), COCO (CUPre), CTC (PMC), in silico labelling fields (`isl`) and LightMyCells
(`lightmycells`, UNETR). The synthetic writers of the same layouts are `cellzoo.synthetic.layouts`."""

from cellzoo.io.layouts.cellseg import read_cellseg
from cellzoo.io.layouts.coco import read_coco
from cellzoo.io.layouts.ctc import read_ctc, read_ctc_tracks
from cellzoo.io.layouts.isl import isl_datalist, read_isl, select_channels
from cellzoo.io.layouts.lightmycells import read_lightmycells

__all__ = ["isl_datalist", "read_cellseg", "read_coco", "read_ctc", "read_ctc_tracks", "read_isl", "read_lightmycells",
           "select_channels"]
