"""CUPre (bundle `cupre_instance_seg`): Cascade Mask R-CNN on a timm backbone, COCO pretraining, AMT2 (MoCo on
unlabelled cells alternating with COCO detection under L2-SP), few-shot fine-tuning, tiled inference and
COCO / LIVECell AP."""

from cellzoo.methods.cupre.amt2 import AMT2Trainer
from cellzoo.methods.cupre.data import (
    PartSampler,
    category_ids,
    cell_images,
    coco_items,
    few_shot_split,
    labelled,
    labels_to_coco_folder,
    take_fraction,
)
from cellzoo.methods.cupre.export import InstanceLabelNetwork
from cellzoo.methods.cupre.inference import TiledDetectionInferer, merge_detections
from cellzoo.methods.cupre.masks import detections_to_coco, detections_to_labels, empty_detections, paste_masks
from cellzoo.methods.cupre.evaluation import DetectionAPMetric, ground_truth_coco, write_detection_report
from cellzoo.methods.cupre.network import (
    CASCADE_IOUS,
    CASCADE_WEIGHTS,
    CascadeMaskRCNN,
    CascadeRoIHeads,
    GroupNormFor,
    NoResizeTransform,
    TimmFPNBackbone,
    cascade_mask_rcnn,
)
from cellzoo.methods.cupre.outputs import SaveDetectionsd, write_detection_outputs
from cellzoo.methods.cupre.training import (
    L2SP,
    DetectionLoss,
    PrepareDetectionBatch,
    RecordTrainer,
    detection_collate,
    detection_loader,
)
from cellzoo.methods.cupre.transforms import (
    CocoMasksd,
    MasksToTargetd,
    cell_view_transforms,
    detection_predict_transforms,
    detection_train_transforms,
    detection_valid_transforms,
    masks_to_boxes,
)

__all__ = [
    "AMT2Trainer", "CASCADE_IOUS", "CASCADE_WEIGHTS", "CascadeMaskRCNN", "CascadeRoIHeads", "CocoMasksd",
    "DetectionAPMetric", "DetectionLoss", "GroupNormFor", "InstanceLabelNetwork", "L2SP", "MasksToTargetd", "NoResizeTransform",
    "PartSampler", "PrepareDetectionBatch", "RecordTrainer", "SaveDetectionsd", "TiledDetectionInferer", "TimmFPNBackbone",
    "cascade_mask_rcnn", "category_ids", "cell_images", "cell_view_transforms", "coco_items",
    "detection_collate", "detection_loader", "detection_predict_transforms", "detection_train_transforms",
    "detection_valid_transforms", "detections_to_coco", "detections_to_labels", "empty_detections",
    "few_shot_split", "ground_truth_coco", "labelled", "labels_to_coco_folder", "masks_to_boxes",
    "merge_detections", "paste_masks", "take_fraction", "write_detection_outputs", "write_detection_report",
]
