"""Training targets computed from instance labels: cellpose-style flows (and the spatial transforms that move
them with the image) and per-cell distance maps."""

from cellzoo.targets.distance import LabelsToDistanced, labels_to_distance
from cellzoo.targets.flow_geometry import NormalizeFlowsd, RandFlowFlipd, RandFlowRotate90d
from cellzoo.targets.flows import LabelsToFlowsd, labels_to_flows

__all__ = ["LabelsToDistanced", "LabelsToFlowsd", "NormalizeFlowsd", "RandFlowFlipd", "RandFlowRotate90d",
           "labels_to_distance", "labels_to_flows"]
