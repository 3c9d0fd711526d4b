"""Training-loop helpers for the cellzoo bundles: samplers and data-centric utilities."""

from cellzoo.engines.modality import discover_modalities, encoder_embeddings
from cellzoo.engines.samplers import AmplifiedSampler, MemoryReplayBatchSampler

__all__ = ["AmplifiedSampler", "MemoryReplayBatchSampler", "discover_modalities", "encoder_embeddings"]
