"""What ignite/MONAI engines lack and several bundles use: batch preparation, loaders, weights, resume,
convergence, run settings, multi-GPU (`cellzoo.engines.distributed`), step timing (`cellzoo.engines.timing`)."""

from cellzoo.engines.batches import PrepareImageTarget
from cellzoo.engines.convergence import Convergence, read_curve
from cellzoo.engines.loaders import SamplerEpochHandler, epoch_sampler, training_loader
from cellzoo.engines.resume import TrainingResume, latest_checkpoint
from cellzoo.engines.runtime import setup_run
from cellzoo.engines.weights import WeightMatch, load_weights, read_state_dict, transfer_weights

__all__ = ["Convergence", "PrepareImageTarget", "SamplerEpochHandler", "TrainingResume", "WeightMatch", "epoch_sampler",
           "latest_checkpoint", "load_weights", "read_curve", "read_state_dict", "setup_run", "training_loader",
           "transfer_weights"]
