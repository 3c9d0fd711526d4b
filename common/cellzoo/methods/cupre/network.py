"""CUPre's detector: Cascade Mask R-CNN on a timm backbone with FPN, built from torchvision's components.

After *CUPre: Cross-domain Unsupervised Pre-training for Few-Shot Cell Segmentation* (Liao et al.), sec.
III-B/C: a Cascade Mask R-CNN (Cai & Vasconcelos) with a ResNeSt-200 backbone and an FPN neck. torchvision
(0.29) has the region proposal network, RoIAlign, the FPN and the Mask R-CNN heads but no cascade, so the
three box stages are written here (`CascadeRoIHeads`, by hand: no library provides them):

- stage t has its own box head, class scores, class-agnostic box regression, IoU threshold (0.5 / 0.6 /
  0.7) and regression weights ((10,10,5,5), (20,20,10,10), (30,30,15,15));
- stage 1 samples proposals (RPN proposals + ground truth); each later stage takes the previous stage's
  refined boxes, detached, and labels them again at its own, higher threshold;
- at inference the class scores of the three stages are averaged and the last stage's boxes kept;
- the mask head learns on the last stage's positive boxes and predicts on the final detections.

The network keeps torchvision's `GeneralizedRCNN` interface: `net(images, targets)` returns the loss dict
in training mode and, in eval mode, one dict per image with `boxes` (N, 4) xyxy, `scores`, `labels` and
`mask_probs` (N, 1, M, M) — mask probabilities in box coordinates, pasted into images by
`cellzoo.methods.cupre.masks` only where needed (pasting 2000 full-image masks would take gigabytes).
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import maskrcnn_inference, maskrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign, boxes as box_ops
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

__all__ = ["CASCADE_IOUS", "CASCADE_WEIGHTS", "CascadeMaskRCNN", "CascadeRoIHeads", "GroupNormFor",
           "NoResizeTransform", "TimmFPNBackbone", "cascade_mask_rcnn"]

CASCADE_IOUS = (0.5, 0.6, 0.7)
CASCADE_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))
NORMS = ("group", "batch", "frozen_batch")


class GroupNormFor(nn.GroupNorm):
    """GroupNorm taking the channel count first, as timm's and torchvision's `norm_layer` calls do.

    `groups` groups where the channels allow, but always at least 2 channels per group: ResNeSt's split
    attention normalises a pooled 1 x 1 map, where a group of one channel would be a single value.
    """

    def __init__(self, num_channels: int, groups: int = 32, eps: float = 1e-5, affine: bool = True, **_):
        num_channels = int(num_channels)
        super().__init__(math.gcd(int(groups), max(num_channels // 2, 1)), num_channels, eps=eps, affine=affine)


def norm_layer(norm: str, groups: int = 32):
    """The normalisation layer factory for a `norm` name."""
    if norm == "group":
        return functools.partial(GroupNormFor, groups=int(groups))
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "frozen_batch":
        from torchvision.ops import FrozenBatchNorm2d

        return FrozenBatchNorm2d
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


class TimmFPNBackbone(nn.Module):
    """A timm `features_only` backbone (`body`, what MoCo trains) and torchvision's FPN (`fpn`, the neck).

    Levels are the backbone's stride-4..32 maps (P2-P5) plus a max-pooled P6, named "0".."3" and "pool"
    as torchvision's detection heads expect. Weights are never downloaded (`pretrained=False`).
    """

    def __init__(self, name: str = "resnest200e", out_channels: int = 256, norm: str = "group", gn_groups: int = 32,
                 in_chans: int = 3, out_indices: Sequence[int] = (1, 2, 3, 4), **timm_kwargs):
        super().__init__()
        import timm

        self.body = timm.create_model(name, pretrained=False, features_only=True, out_indices=tuple(out_indices),
                                      in_chans=in_chans, norm_layer=norm_layer(norm, gn_groups), **timm_kwargs)
        self.in_channels_list = list(self.body.feature_info.channels())
        self.fpn = FeaturePyramidNetwork(self.in_channels_list, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        features = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))


class NoResizeTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform (normalise, batch with padding to a stride multiple) without its resize.

    Cells keep their pixel size: Mask R-CNN's resize to an 800-px short side would magnify 704x520
    LIVECell images and 128-px training crops by different factors, so anchor sizes would mean different
    cell sizes in training and inference.
    """

    def __init__(self, image_mean: Sequence[float], image_std: Sequence[float], size_divisible: int = 32):
        super().__init__(min_size=1, max_size=1, image_mean=list(image_mean), image_std=list(image_std),
                         size_divisible=size_divisible)

    def resize(self, image: Tensor, target: dict | None = None):
        return image, target


class _ScaleGradient(torch.autograd.Function):
    """Identity forward, gradient times `scale` backward (each of the three stages' gradient into the shared
    features is divided by the number of stages, so the cascade does not triple the backbone's step)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.scale, None


class CascadeBoxPredictor(nn.Module):
    """Class scores (background + classes) and one class-agnostic box delta per RoI, as Cascade R-CNN uses."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)


class CascadeStage(nn.Module):
    """One cascade stage: box head, predictor and the box coder/matcher of its IoU threshold."""

    def __init__(self, in_features: int, representation: int, num_classes: int, iou: float,
                 weights: Sequence[float]):
        super().__init__()
        self.head = TwoMLPHead(in_features, representation)
        self.predictor = CascadeBoxPredictor(representation, num_classes)
        self.iou = float(iou)
        self.box_coder = det_utils.BoxCoder(tuple(float(w) for w in weights))
        self.matcher = det_utils.Matcher(self.iou, self.iou, allow_low_quality_matches=False)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        return self.predictor(self.head(pooled))


class CascadeRoIHeads(nn.Module):
    """Cascade box stages and a mask head on torchvision's RoIAlign, with torchvision's RoIHeads interface."""

    def __init__(self, out_channels: int, num_classes: int, representation: int = 1024,
                 stage_ious: Sequence[float] = CASCADE_IOUS, stage_weights: Sequence[Sequence[float]] = CASCADE_WEIGHTS,
                 stage_loss_weights: Sequence[float] | None = None, batch_size_per_image: int = 512,
                 positive_fraction: float = 0.25, score_thresh: float = 0.05, nms_thresh: float = 0.5,
                 detections_per_img: int = 2000, mask_layers: Sequence[int] = (256, 256, 256, 256),
                 featmap_names: Sequence[str] = ("0", "1", "2", "3")):
        super().__init__()
        if len(stage_ious) != len(stage_weights) or not stage_ious:
            raise ValueError("stage_ious and stage_weights need one entry per cascade stage")
        names = list(featmap_names)
        self.box_roi_pool = MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2)
        self.stages = nn.ModuleList(CascadeStage(out_channels * 7 * 7, representation, num_classes, iou, w)
                                    for iou, w in zip(stage_ious, stage_weights))
        self.stage_loss_weights = tuple(stage_loss_weights or (1.0,) * len(self.stages))
        self.sampler = det_utils.BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.mask_roi_pool = MultiScaleRoIAlign(names, output_size=14, sampling_ratio=2)
        self.mask_head = MaskRCNNHeads(out_channels, list(mask_layers), 1)
        self.mask_predictor = MaskRCNNPredictor(mask_layers[-1], mask_layers[-1], num_classes)
        self.num_classes = num_classes
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img

    # ---------------------------------------------------------------- training targets

    def _label(self, stage: CascadeStage, proposals: list[Tensor], targets: list[dict]) -> tuple[list[Tensor], list[Tensor]]:
        """(matched ground-truth index, class label; 0 = background) per proposal at the stage's IoU threshold."""
        matched, labels = [], []
        for boxes, target in zip(proposals, targets):
            gt = target["boxes"]
            if gt.numel() == 0:  # an image without objects: every proposal is background
                matched.append(torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device))
                labels.append(torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device))
                continue
            idx = stage.matcher(box_ops.box_iou(gt, boxes))
            label = target["labels"][idx.clamp(min=0)].to(torch.int64)
            label[idx < 0] = 0  # below the threshold (torchvision's Matcher marks -1 / -2)
            matched.append(idx.clamp(min=0))
            labels.append(label)
        return matched, labels

    def _sample(self, proposals: list[Tensor], targets: list[dict]) -> list[Tensor]:
        """Stage 1's RoIs: proposals plus ground-truth boxes, sampled to a fixed positive fraction."""
        proposals = [torch.cat([p, t["boxes"].to(p.dtype)]) for p, t in zip(proposals, targets)]
        _, labels = self._label(self.stages[0], proposals, targets)
        positive, negative = self.sampler(labels)
        return [p[torch.where(pos | neg)[0]] for p, pos, neg in zip(proposals, positive, negative)]

    def _stage_loss(self, stage: CascadeStage, logits: Tensor, deltas: Tensor, proposals: list[Tensor],
                    targets: list[dict]) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
        """Cross-entropy over all RoIs and smooth-L1 on the positives' deltas (normalised by the RoI count)."""
        matched, labels = self._label(stage, proposals, targets)
        label = torch.cat(labels)
        loss_cls = F.cross_entropy(logits, label)
        positive = torch.where(label > 0)[0]
        if positive.numel() == 0:
            return loss_cls, deltas.sum() * 0.0, matched, labels
        gt = torch.cat([t["boxes"][m] if t["boxes"].numel() else torch.zeros_like(p)
                        for t, m, p in zip(targets, matched, proposals)])
        reference = torch.cat(proposals)
        wanted = stage.box_coder.encode_single(gt[positive], reference[positive])
        loss_box = F.smooth_l1_loss(deltas[positive], wanted, beta=1 / 9, reduction="sum") / max(label.numel(), 1)
        return loss_cls, loss_box, matched, labels

    # ---------------------------------------------------------------- forward

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes: list[tuple[int, int]],
                targets: list[dict] | None = None) -> tuple[list[dict], dict[str, Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("targets are needed in training mode")
            proposals = self._sample(proposals, targets)
        losses: dict[str, Tensor] = {}
        stage_scores: list[Tensor] = []
        counts = [len(p) for p in proposals]
        for k, stage in enumerate(self.stages):
            pooled = self.box_roi_pool(features, proposals, image_shapes)
            if self.training:
                pooled = _ScaleGradient.apply(pooled, 1.0 / len(self.stages))
            logits, deltas = stage(pooled)
            if self.training:
                loss_cls, loss_box, matched, labels = self._stage_loss(stage, logits, deltas, proposals, targets)
                losses[f"loss_classifier_stage{k}"] = loss_cls * self.stage_loss_weights[k]
                losses[f"loss_box_reg_stage{k}"] = loss_box * self.stage_loss_weights[k]
            else:
                stage_scores.append(F.softmax(logits, -1))
            if k < len(self.stages) - 1 or not self.training:
                # the next stage refines these boxes; no gradient flows back through them
                refined = stage.box_coder.decode_single(deltas.detach(), torch.cat(proposals))
                refined = [box_ops.clip_boxes_to_image(b, s) for b, s in zip(refined.split(counts), image_shapes)]
                if k < len(self.stages) - 1:
                    proposals = refined
        if self.training:
            losses["loss_mask"] = self._mask_loss(features, proposals, image_shapes, targets, matched, labels)
            return [], losses
        scores = torch.stack(stage_scores).mean(0)  # the cascade's ensemble of stage classifiers
        return self._detections(features, refined, scores.split(counts), image_shapes), losses

    def _mask_loss(self, features, proposals, image_shapes, targets, matched, labels) -> Tensor:
        """Mask R-CNN's mask loss on the positive RoIs of the last stage."""
        positive = [torch.where(label > 0)[0] for label in labels]
        boxes = [p[i] for p, i in zip(proposals, positive)]
        if sum(len(b) for b in boxes) == 0:
            # zero, but through every mask parameter, so distributed training sees them all used
            return sum(p.sum() for m in (self.mask_head, self.mask_predictor) for p in m.parameters()) * 0.0
        logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_shapes)))
        return maskrcnn_loss(logits, boxes, [t["masks"] for t in targets], [t["labels"] for t in targets],
                             [m[i] for m, i in zip(matched, positive)])

    def _detections(self, features, boxes: list[Tensor], scores: list[Tensor],
                    image_shapes: list[tuple[int, int]]) -> list[dict]:
        """Per class: score threshold, small-box removal, NMS, the best `detections_per_img`; then masks."""
        results = []
        for image_boxes, image_scores in zip(boxes, scores):
            n, classes = image_scores.shape
            labels = torch.arange(1, classes, device=image_scores.device).repeat(n)
            flat_boxes = image_boxes[:, None].expand(n, classes - 1, 4).reshape(-1, 4)
            flat_scores = image_scores[:, 1:].reshape(-1)
            keep = torch.where(flat_scores > self.score_thresh)[0]
            flat_boxes, flat_scores, labels = flat_boxes[keep], flat_scores[keep], labels[keep]
            keep = box_ops.remove_small_boxes(flat_boxes, min_size=1e-2)
            flat_boxes, flat_scores, labels = flat_boxes[keep], flat_scores[keep], labels[keep]
            keep = box_ops.batched_nms(flat_boxes, flat_scores, labels, self.nms_thresh)[: self.detections_per_img]
            results.append({"boxes": flat_boxes[keep], "scores": flat_scores[keep], "labels": labels[keep]})
        final = [r["boxes"] for r in results]
        if sum(len(b) for b in final):
            logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, final, image_shapes)))
            probs = maskrcnn_inference(logits, [r["labels"] for r in results])
        else:  # the mask predictor doubles the RoI size (14 -> 28)
            side = 2 * self.mask_roi_pool.output_size[0]
            probs = [torch.zeros((0, 1, side, side), device=b.device) for b in final]
        for result, prob in zip(results, probs):
            result["mask_probs"] = prob
        return results


class CascadeMaskRCNN(GeneralizedRCNN):
    """torchvision's GeneralizedRCNN (transform -> backbone -> RPN -> RoI heads) with `CascadeRoIHeads`.

    `backbone.body` is the timm backbone that MoCo trains in AMT2 and L2-SP regularises.
    """


def cascade_mask_rcnn(num_classes: int = 2, backbone: str = "resnest200e", fpn_channels: int = 256,
                      norm: str = "group", gn_groups: int = 32, backbone_kwargs: dict | None = None,
                      anchor_sizes: Sequence[int] = (8, 16, 32, 64, 128), aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                      rpn_pre_nms_top_n_train: int = 2000, rpn_pre_nms_top_n_test: int = 6000,
                      rpn_post_nms_top_n_train: int = 2000, rpn_post_nms_top_n_test: int = 3000,
                      rpn_nms_thresh: float = 0.7, rpn_batch_size_per_image: int = 256,
                      box_batch_size_per_image: int = 512, representation: int = 1024,
                      mask_layers: Sequence[int] = (256, 256, 256, 256), stage_ious: Sequence[float] = CASCADE_IOUS,
                      stage_weights: Sequence[Sequence[float]] = CASCADE_WEIGHTS,
                      stage_loss_weights: Sequence[float] | None = None, box_score_thresh: float = 0.05,
                      box_nms_thresh: float = 0.5, detections_per_img: int = 2000,
                      image_mean: Sequence[float] = (0.5, 0.5, 0.5), image_std: Sequence[float] = (0.25, 0.25, 0.25),
                      in_chans: int = 3) -> CascadeMaskRCNN:
    """The CUPre detector; `num_classes` counts the background (cells: 2).

    Defaults are the paper-scale model (ResNeSt-200 with 256-channel FPN, 1024-d box heads, 4x256 mask
    head) with anchors for small objects (8-128 px on P2-P6) and up to 2000 detections per image, as
    LIVECell images hold hundreds to thousands of cells.
    """
    body = TimmFPNBackbone(backbone, fpn_channels, norm, gn_groups, in_chans, **(backbone_kwargs or {}))
    anchors = AnchorGenerator(tuple((int(s),) for s in anchor_sizes), (tuple(aspect_ratios),) * len(anchor_sizes))
    rpn = RegionProposalNetwork(
        anchors, RPNHead(fpn_channels, anchors.num_anchors_per_location()[0]), fg_iou_thresh=0.7, bg_iou_thresh=0.3,
        batch_size_per_image=rpn_batch_size_per_image, positive_fraction=0.5,
        pre_nms_top_n={"training": rpn_pre_nms_top_n_train, "testing": rpn_pre_nms_top_n_test},
        post_nms_top_n={"training": rpn_post_nms_top_n_train, "testing": rpn_post_nms_top_n_test},
        nms_thresh=rpn_nms_thresh)
    heads = CascadeRoIHeads(fpn_channels, num_classes, representation, stage_ious, stage_weights, stage_loss_weights,
                            box_batch_size_per_image, 0.25, box_score_thresh, box_nms_thresh, detections_per_img,
                            mask_layers)
    return CascadeMaskRCNN(body, rpn, heads, NoResizeTransform(image_mean, image_std))
