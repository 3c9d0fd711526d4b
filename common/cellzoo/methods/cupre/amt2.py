"""AMT2, CUPre's alternate multi-task pretraining (sec. III-D), as an ignite engine of rounds.

One epoch of `AMT2Trainer` is one round k (of K): (a) the MoCo trainer (a MONAI `SupervisedTrainer` of
`cellzoo.engines.contrastive.MoCo` on unlabelled cell images) trains the detector's backbone; (b) the L2-SP
reference is set to the backbone after (a); (c) the detection trainer (a `SupervisedTrainer` of the whole
detector, its loss including L2-SP) trains on part k of the COCO set. MONAI handlers attach to the round
engine as to any trainer: validation after a round, the best checkpoint, MLflow, resume (whose state is
the round count, the weights, both optimisers, the MoCo queue and key encoder, and both AMP loss scalers).

MONAI's `Trainer.run()` makes a new GradScaler on every run, and AMT2 runs each of its two trainers once per
round: `KeepGradScaler` gives each trainer one scaler for all its runs, so the loss scale it has learnt
carries over from round to round (and through `--resume`) instead of restarting at 2**16.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from ignite.engine import Engine, Events

from cellzoo.engines.contrastive import MoCo
from cellzoo.methods.cupre.data import PartSampler
from cellzoo.methods.cupre.training import L2SP

logger = logging.getLogger(__name__)

__all__ = ["AMT2Trainer", "KeepGradScaler"]


def _mean_loss(engine) -> float:
    """The mean training loss of a finished MONAI trainer's last epoch (the `loss` of its output)."""
    return float(getattr(engine.state, "mean_loss", float("nan")))


class _MeanLoss:
    """Ignite handler: the mean of `output["loss"]` over each epoch, into `state.mean_loss`."""

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.complete)

    def reset(self, engine) -> None:
        self.total, self.count = 0.0, 0

    def update(self, engine) -> None:
        output = engine.state.output
        output = output[0] if isinstance(output, list) else output  # RecordTrainer's one record
        loss = output.get("loss") if isinstance(output, dict) else output
        if loss is not None:
            self.total += float(torch.as_tensor(loss).detach().float().mean())
            self.count += 1

    def complete(self, engine) -> None:
        engine.state.mean_loss = self.total / max(self.count, 1)


class KeepGradScaler:
    """Ignite handler: one AMP GradScaler for every run of a MONAI trainer (see the module docstring), with
    `state_dict`/`load_state_dict` for the resume state. Without AMP (no scaler) it does nothing."""

    def __init__(self):
        self.scaler = None
        self._loaded: dict | None = None

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)

    def _started(self, engine) -> None:
        if getattr(engine, "scaler", None) is None:
            return
        if self.scaler is None:  # the first run: keep the scaler MONAI just made, with a resumed state
            self.scaler = engine.scaler
            if self._loaded:
                self.scaler.load_state_dict(self._loaded)
        else:
            engine.scaler = self.scaler

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else dict(self._loaded or {})

    def load_state_dict(self, state: dict) -> None:
        self._loaded = dict(state or {})
        if self.scaler is not None and self._loaded:
            self.scaler.load_state_dict(self._loaded)


class _Scalers:
    """The scalers of AMT2's two trainers as one resume-state entry."""

    def __init__(self, **keepers: KeepGradScaler):
        self.keepers = keepers

    def state_dict(self) -> dict:
        return {name: keeper.state_dict() for name, keeper in self.keepers.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, keeper in self.keepers.items():
            keeper.load_state_dict((state or {}).get(name, {}))


class AMT2Trainer(Engine):
    """K rounds of (MoCo on cell images -> L2-SP reference -> detection on the next COCO part).

    `max_epochs` is the number of rounds K; `coco_sampler` is the detection loader's `PartSampler` (split
    into K parts; another sampler, e.g. a DistributedSampler, draws from the whole set every round).
    Without `coco_trainer` the rounds are MoCo alone (the Cells-MoCo baseline). `train_handlers` are
    MONAI/ignite handlers with `attach(engine)`, as a trainer's; `optimizer` (the detection optimiser) is
    exposed for handlers that log learning rates; `grad_scalers` (both trainers' AMP loss scalers) for the
    resume state.
    """

    def __init__(self, moco_trainer, coco_trainer=None, coco_sampler: PartSampler | None = None,
                 max_epochs: int = 10, l2sp: L2SP | None = None, moco: MoCo | None = None,
                 restart_key_encoder: bool = True, train_handlers: Sequence | None = None,
                 optimizer: torch.optim.Optimizer | None = None):
        super().__init__(self._round)
        self.moco_trainer, self.coco_trainer, self.coco_sampler = moco_trainer, coco_trainer, coco_sampler
        self.l2sp, self.moco, self.restart_key_encoder = l2sp, moco, bool(restart_key_encoder)
        self.rounds, self.optimizer = int(max_epochs), optimizer
        keepers = {}
        for name, trainer in (("moco", moco_trainer), ("coco", coco_trainer)):
            if trainer is not None:
                _MeanLoss().attach(trainer)
                keepers[name] = KeepGradScaler()
                keepers[name].attach(trainer)
        self.grad_scalers = _Scalers(**keepers)
        for handler in train_handlers or []:
            handler.attach(self)

    def _round(self, engine: Engine, _batch) -> list[dict]:
        """One round; its output is one record (the decollated form MONAI's handlers read)."""
        k, rounds = engine.state.epoch - 1, engine.state.max_epochs
        logger.info("AMT2 round %d/%d: MoCo on cell images", k + 1, rounds)
        if self.moco is not None and self.restart_key_encoder:
            # the detection step moved the backbone: keys start again from it rather than from a stale copy
            self.moco.sync_key_encoder()
        self.moco_trainer.run()
        moco_loss = _mean_loss(self.moco_trainer)
        if self.coco_trainer is None:
            return [{"loss": moco_loss, "moco_loss": moco_loss, "round": k + 1}]
        if self.l2sp is not None:
            self.l2sp.reset_reference()  # w0 of eq. 7: the backbone right after the MoCo step
        if hasattr(self.coco_sampler, "set_part"):
            self.coco_sampler.set_part(k)
            logger.info("AMT2 round %d/%d: detection on COCO part %d of %d", k + 1, rounds,
                        self.coco_sampler.part + 1, len(self.coco_sampler.parts))
        self.coco_trainer.run()
        return [{"loss": _mean_loss(self.coco_trainer), "moco_loss": moco_loss, "round": k + 1}]

    def run(self, data=None, max_epochs: int | None = None, epoch_length: int | None = None):
        """Run the rounds (one iteration per round); the arguments default to `max_epochs` rounds."""
        return super().run([None] if data is None else data, max_epochs=max_epochs or self.rounds,
                           epoch_length=epoch_length)
