"""Post-processing of predictions: per-cell measurement tables and outline overlays."""

from cellzoo.postprocess.measure import (
    MEASUREMENT_COLUMNS,
    MEASUREMENT_COLUMNS_3D,
    column_order,
    measure_cells,
    measure_files,
    write_measurements_csv,
)
from cellzoo.postprocess.overlay import display_rgb, overlay_outlines, write_overlay_png

__all__ = [
    "MEASUREMENT_COLUMNS",
    "MEASUREMENT_COLUMNS_3D",
    "column_order",
    "display_rgb",
    "measure_cells",
    "measure_files",
    "overlay_outlines",
    "write_measurements_csv",
    "write_overlay_png",
]
