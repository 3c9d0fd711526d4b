"""Training a detector in MONAI engines: list batches, batch preparation, the summed instance loss and the
L2-SP regulariser (Li et al., *Explicit inductive bias for transfer learning*, ICML 2018) in CUPre's form.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import torch
from monai.data import DataLoader
from monai.engines import SupervisedTrainer
from monai.utils import CommonKeys, convert_to_tensor
from torch import Tensor, nn
from torch.utils.data import Dataset, Sampler

from cellzoo.engines import epoch_sampler

logger = logging.getLogger(__name__)

__all__ = ["DetectionLoss", "L2SP", "PrepareDetectionBatch", "RecordTrainer", "detection_collate", "detection_loader"]

TARGET_KEYS = ("boxes", "labels", "masks")


def detection_collate(items: list[dict]) -> dict[str, list]:
    """A batch as {key: [value per item]}: detection items differ in size and object count, so nothing is stacked."""
    items = [i for item in items for i in (item if isinstance(item, list) else [item])]
    return {key: [item[key] for item in items] for key in items[0]}


def detection_loader(dataset: Dataset, batch_size: int, sampler: Sampler | None = None,
                     samples_per_epoch: int | None = None, num_workers: int = 0, seed: int = 0,
                     pin_memory: bool = False) -> DataLoader:
    """`cellzoo.engines.training_loader` with `detection_collate`: `sampler`, or `samples_per_epoch` shuffled items."""
    sampler = sampler if sampler is not None else epoch_sampler(dataset, samples_per_epoch, seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=detection_collate, pin_memory=pin_memory)


class PrepareDetectionBatch:
    """`prepare_batch` for MONAI engines running the detector.

    Training (`targets=True`): images and target dicts on the device, with the targets also passed to the
    network (`net(images, targets)` returns the loss dict). Evaluation: the images, and as the engine's
    "label" the ground-truth records {annotations, height, width, name} the metrics need (or None).
    """

    def __init__(self, targets: bool = True, gt_keys: Sequence[str] = ("annotations", "height", "width", "name")):
        self.targets, self.gt_keys = bool(targets), tuple(gt_keys)

    def __call__(self, batch: dict, device=None, non_blocking: bool = False, **kwargs):
        # plain tensors: torchvision's detector does not need MONAI's metadata, and every operation on a
        # MetaTensor pays for carrying it (torch.as_tensor would keep the subclass)
        images = [convert_to_tensor(image, track_meta=False).float().to(device=device, non_blocking=non_blocking)
                  for image in batch["image"]]
        if self.targets:
            targets = [{key: convert_to_tensor(batch[key][i], track_meta=False).to(device=device,
                                                                                  non_blocking=non_blocking)
                        for key in TARGET_KEYS} for i in range(len(images))]
            return images, targets, (targets,), {}
        if "annotations" not in batch:
            return images, None
        return images, [{key: batch[key][i] for key in self.gt_keys if key in batch} for i in range(len(images))]


class L2SP(nn.Module):
    """CUPre's L2-SP penalty on a module's weights w (eq. 7): alpha * ||w - w0||^2 + (1 - alpha) * ||w||^2.

    w0 is a frozen copy of the module taken at construction (after `init_ckpt` is loaded, so it is the
    pretrained backbone) or by `reset_reference()` (AMT2: after each MoCo step). `weight` scales the
    penalty against the instance loss; the paper gives neither weight nor alpha.
    """

    def __init__(self, module: nn.Module, alpha: float = 0.9, weight: float = 1e-3):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        self.module, self.alpha, self.weight = [module], float(alpha), float(weight)  # a list: not a submodule
        self.reference = copy.deepcopy(module).requires_grad_(False)

    @torch.no_grad()
    def reset_reference(self) -> None:
        """Make the module's current weights the reference w0."""
        for ref, live in zip(self.reference.parameters(), self.module[0].parameters()):
            ref.copy_(live)

    def forward(self) -> Tensor:
        total = None
        for ref, live in zip(self.reference.parameters(), self.module[0].parameters()):
            if not live.requires_grad:
                continue
            term = self.alpha * (live - ref).pow(2).sum() + (1.0 - self.alpha) * live.pow(2).sum()
            total = term if total is None else total + term
        if total is None:
            return torch.zeros(())
        return self.weight * total


class DetectionLoss(nn.Module):
    """The sum of the detector's loss dict (L_inst = cls + box + mask, with RPN and all cascade stages), plus
    an optional L2-SP term. `components` keeps the last values, for logging."""

    def __init__(self, l2sp: L2SP | None = None):
        super().__init__()
        self.l2sp = l2sp
        self.components: dict[str, float] = {}

    def forward(self, losses: dict[str, Tensor], target: object = None) -> Tensor:
        total = sum(losses.values())
        self.components = {k: float(v.detach()) for k, v in losses.items()}
        if self.l2sp is not None and self.l2sp.weight > 0:
            penalty = self.l2sp()
            self.components["l2sp"] = float(penalty.detach())
            total = total + penalty.to(total.device)
        return total


class RecordTrainer(SupervisedTrainer):
    """MONAI's SupervisedTrainer for networks whose batches MONAI cannot decollate (a detector's targets and
    loss dict, MoCo's two views): decollation off, and each iteration's output is one record,
    [{"loss": total, **the loss function's `components`}] — the decollated form in which MONAI's handlers
    (StatsHandler, `--tracking mlflow`) read `from_engine(["loss"], first=True)`.
    """

    def __init__(self, *args, **kwargs):
        kwargs["decollate"] = False
        super().__init__(*args, **kwargs)

    def _iteration(self, engine, batchdata: dict) -> list[dict]:
        output = super()._iteration(engine, batchdata)
        record = {"loss": output[CommonKeys.LOSS].detach()}
        record.update(getattr(engine.loss_function, "components", {}))
        return [record]
