"""UNETR for LightMyCells (bundle `unetr_lightmycells`): LightMyCells datalists, a 2D UNETR of any patch
size, its MAE pretraining with grid masking, the label-free -> organelle data chains, and the challenge's
metrics."""

from cellzoo.methods.unetr.augment import AUGMENTATIONS, RandGridMaskd, RandomPlaned, augmentation_chain, grid_mask
from cellzoo.methods.unetr.data import BEST_FOCUS, best_focus, inference_items, lightmycells_items, plane_items
from cellzoo.methods.unetr.intensity import Clahed, Denormalized, ZScored, clahe
from cellzoo.methods.unetr.mae import (
    MASKING,
    GridMaskedAutoencoder,
    MaskedReconstructionLoss,
    MaskedReconstructionMetric,
    checkerboard_mask,
)
from cellzoo.methods.unetr.evaluation import (
    CHALLENGE_METRICS,
    ChallengeScores,
    challenge_metrics,
    challenge_normalize,
    summarise_scores,
)
from cellzoo.methods.unetr.network import UNETR2D, default_skip_blocks, freeze_unused_cross_attention, mae_to_unetr_keys
from cellzoo.methods.unetr.outputs import SaveOrganelled, prediction_path
from cellzoo.methods.unetr.transforms import (
    unetr_output_transforms,
    unetr_predict_transforms,
    unetr_train_transforms,
    unetr_valid_transforms,
)

__all__ = [
    "AUGMENTATIONS",
    "BEST_FOCUS",
    "CHALLENGE_METRICS",
    "MASKING",
    "UNETR2D",
    "ChallengeScores",
    "Clahed",
    "Denormalized",
    "GridMaskedAutoencoder",
    "MaskedReconstructionLoss",
    "MaskedReconstructionMetric",
    "RandGridMaskd",
    "RandomPlaned",
    "SaveOrganelled",
    "ZScored",
    "augmentation_chain",
    "best_focus",
    "challenge_metrics",
    "challenge_normalize",
    "checkerboard_mask",
    "clahe",
    "default_skip_blocks",
    "freeze_unused_cross_attention",
    "grid_mask",
    "inference_items",
    "lightmycells_items",
    "mae_to_unetr_keys",
    "plane_items",
    "prediction_path",
    "summarise_scores",
    "unetr_output_transforms",
    "unetr_predict_transforms",
    "unetr_train_transforms",
    "unetr_valid_transforms",
]
