"""What the label-efficiency benchmark measures: the metrics of each kind of task and the papers' claims it checks.

Its own module so that the runner (label_efficiency.py) and the report (report.py) both read it without
importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CLAIMS", "KINDS", "Claim"]

KINDS = {"nuclei": ("box_ap", "f1", "mask_ap"), "labelfree": ("psnr", "pcc", "ssim")}  # common metrics, key first


@dataclass(frozen=True)
class Claim:
    """A paper's claim the benchmark can check: `arm` beats `baseline` on `metric` (higher is better)."""

    paper: str
    text: str
    method: str
    arm: str
    baseline: str
    metric: str
    absent: str = ""  # why the benchmark cannot check it, shown when it has no rows


CLAIMS = (
    Claim("PMC", "pseudo-colorizing masked cells as pretraining raises detection AP over training from scratch "
          "(Fluo-N2DH-SIM+: box AP 31.4 -> 43.4)", "pmc_detection", "pmc", "scratch", "box_ap"),
    Claim("UNETR (LightMyCells)", "MAE pretraining on the brightfield images helps the UNETR predict the nuclear "
          "stain (the paper's UNETR + MAE reaches PSNR 30.2 on the challenge validation)", "unetr_lightmycells",
          "mae", "scratch", "psnr"),
    Claim("In silico labeling", "predicting fluorescence from label-free images as pretraining helps segmentation "
          "with few labels (nucleus IoU after one image 0.64 -> 0.84)", "isl_segmentation", "pretrained", "scratch",
          "f1", absent="ISL takes part with its scratch arms only: its pretext needs label-free planes, and the "
          "benchmark's nucleus task gives it fluorescence (the bundle's own study measures the claim)."),
    Claim("MEDIAR", "pretraining on public labelled data sets before fine-tuning raises F1 on the target data",
          "mediar_cellseg", "pretrained", "scratch", "f1"),
    Claim("CUPre", "MoCo on cells alternating with COCO detection as pretraining beats training from scratch in "
          "few-shot instance segmentation (LIVECell 5 %: box AP 9.9 -> 41.5)", "cupre_instance_seg", "cupre",
          "scratch", "box_ap"),
)
