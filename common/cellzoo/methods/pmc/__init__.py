"""PMC (bundle `pmc_detection`): pseudo-colorizing masked cells as pretraining for CellCentroidFormer cell
detection (Wagner, Fernandez Lopez, Stiller 2023), with the pretexts it is compared with."""

from cellzoo.methods.pmc.colormaps import COLORMAPS, colorize, lookup_table
from cellzoo.methods.pmc.data import (
    LoadContextd,
    detection_datalist,
    expand_slices,
    folder_items,
    pretext_split,
    read_frames,
    read_stack,
    stack_labels,
)
from cellzoo.methods.pmc.decode import DecodeBoxesd, decode_boxes
from cellzoo.methods.pmc.detection import (
    BoxAPMetric,
    CentroidLoss,
    DecodingThreshold,
    HeatmapIoUMetric,
    box_ap,
    heatmap_miou,
    saved_threshold,
)
from cellzoo.methods.pmc.engine import ValidationPlateau, pretext_key_metric, stacked_pred_label
from cellzoo.methods.pmc.evaluation import detection_report
from cellzoo.methods.pmc.masking import BatchMasking, RandMaskd, mae_mask, padded_mask
from cellzoo.methods.pmc.network import PROCEDURES, CellCentroidFormer, ContextBlock, apply_procedure, head_fraction
from cellzoo.methods.pmc.pretext import (
    MASKING,
    PRETEXTS,
    HeadsLoss,
    PretextBatch,
    PretextTargetd,
    SimCLRViewsd,
    ViewsContrastiveLoss,
    pretext_channels,
)
from cellzoo.methods.pmc.targets import CentroidTargetsd, box_heatmap, labels_to_boxes, size_maps, targets_from_boxes
from cellzoo.methods.pmc.transforms import (
    detection_train_transforms,
    detection_valid_transforms,
    predict_transforms,
    pretext_train_transforms,
    pretext_valid_transforms,
)

__all__ = [
    "COLORMAPS", "MASKING", "PRETEXTS", "PROCEDURES", "BatchMasking", "BoxAPMetric", "CellCentroidFormer",
    "CentroidLoss", "CentroidTargetsd", "ContextBlock", "DecodeBoxesd", "HeadsLoss", "HeatmapIoUMetric",
    "DecodingThreshold", "LoadContextd", "PretextBatch", "PretextTargetd", "RandMaskd", "SimCLRViewsd", "ValidationPlateau",
    "ViewsContrastiveLoss", "apply_procedure", "box_ap", "box_heatmap", "colorize", "decode_boxes", "saved_threshold",
    "detection_datalist", "detection_report", "detection_train_transforms", "detection_valid_transforms",
    "expand_slices", "folder_items", "head_fraction", "heatmap_miou", "labels_to_boxes", "lookup_table",
    "mae_mask", "padded_mask", "predict_transforms", "pretext_channels", "pretext_key_metric", "pretext_split",
    "pretext_train_transforms", "pretext_valid_transforms", "read_frames", "read_stack", "size_maps",
    "stack_labels", "stacked_pred_label", "targets_from_boxes",
]
