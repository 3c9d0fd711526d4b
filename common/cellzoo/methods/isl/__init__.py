"""ISL (bundle `isl_segmentation`): datalists of label-free fields, the network per task, its losses,
data chains and post-processing."""

from cellzoo.methods.isl.evaluation import write_field_instance_report
from cellzoo.methods.isl.data import isl_datalist, select_channels
from cellzoo.methods.isl.losses import DistanceMaskLoss, JaccardLoss
from cellzoo.methods.isl.network import TASKS, ShiftedSigmoid, densenet_to_unet_keys, isl_network
from cellzoo.methods.isl.postprocess import (
    DistanceToInstancesd,
    ProbabilityToInstancesd,
    distance_to_instances,
    hmax_seeds,
    nuclei_to_instances,
)
from cellzoo.methods.isl.transforms import (
    isl_output_transforms,
    isl_predict_transforms,
    isl_train_transforms,
    isl_valid_transforms,
)

__all__ = [
    "TASKS",
    "DistanceMaskLoss",
    "DistanceToInstancesd",
    "JaccardLoss",
    "ProbabilityToInstancesd",
    "ShiftedSigmoid",
    "densenet_to_unet_keys",
    "distance_to_instances",
    "hmax_seeds",
    "isl_datalist",
    "isl_network",
    "isl_output_transforms",
    "isl_predict_transforms",
    "isl_train_transforms",
    "isl_valid_transforms",
    "nuclei_to_instances",
    "select_channels",
    "write_field_instance_report",
]
