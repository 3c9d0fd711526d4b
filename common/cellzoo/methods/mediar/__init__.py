"""MEDIAR (bundle `mediar_cellseg`): MEDIAR-Former, its loss, training chains, samplers and modality discovery."""

from cellzoo.methods.mediar.boundary import BoundaryExclusiond, boundary_exclusion_mask
from cellzoo.methods.mediar.intensity import CellAwareIntensityd, cell_factor_map
from cellzoo.methods.mediar.losses import MEDIARLoss
from cellzoo.methods.mediar.modality import discover_modalities, encoder_embeddings
from cellzoo.methods.mediar.network import MEDIARFormer, swap_activations
from cellzoo.methods.mediar.samplers import AmplifiedSampler, MemoryReplayBatchSampler, replay_loader
from cellzoo.methods.mediar.transforms import (
    mediar_predict_transforms,
    mediar_train_transforms,
    mediar_valid_transforms,
    stack_target,
)

__all__ = [
    "AmplifiedSampler",
    "BoundaryExclusiond",
    "CellAwareIntensityd",
    "MEDIARFormer",
    "MEDIARLoss",
    "MemoryReplayBatchSampler",
    "boundary_exclusion_mask",
    "cell_factor_map",
    "discover_modalities",
    "encoder_embeddings",
    "mediar_predict_transforms",
    "mediar_train_transforms",
    "mediar_valid_transforms",
    "replay_loader",
    "stack_target",
    "swap_activations",
]
