"""PMC's engine pieces: the pretext's validation metric and the learning-rate schedule on plateaus.

The paper trains with Adam (lr 1e-4) and reduces the rate tenfold on plateaus down to 1e-6. Here the
plateau is judged on the validation key metric, and only after epochs that validated (ignite's and MONAI's
handlers would also count the epochs in between, with a stale value), and only after `min_iterations`, the
same warm-up the early stopping of `cellzoo.engines.Convergence` waits for: a detector's AP stays 0 until
its first heatmap peak passes the decoding threshold, and a schedule counting those validations as a
plateau would cut the rate tenfold, again and again, before the network has learnt anything (the quick
recipe did: rate 1e-6 by iteration 800, AP 0 throughout). The handler is a training handler, so every
process of a multi-GPU run steps its scheduler with the same (gathered) metric.
"""

from __future__ import annotations

import logging

import torch

from cellzoo.methods.pmc.pretext import ViewsContrastiveLoss, check_pretext, heads_and_target

logger = logging.getLogger(__name__)

__all__ = ["ValidationPlateau", "pretext_key_metric", "stacked_pred_label"]


class ValidationPlateau:
    """Ignite handler: after an epoch in which `evaluator` ran, step a ReduceLROnPlateau with its key metric
    (validations before `min_iterations` trained iterations are not counted)."""

    def __init__(self, lr_scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau, evaluator, print_lr: bool = True,
                 min_iterations: int = 0):
        self.lr_scheduler, self.evaluator, self.print_lr = lr_scheduler, evaluator, bool(print_lr)
        self.min_iterations = int(min_iterations or 0)

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine) -> None:
        state = self.evaluator.state
        name = getattr(state, "key_metric_name", None)
        if state.epoch != engine.state.epoch or name not in state.metrics:
            return  # no validation at this epoch
        if engine.state.iteration < self.min_iterations:
            return  # still warming up: not a plateau
        self.lr_scheduler.step(float(state.metrics[name]))
        if self.print_lr:
            logger.info("learning rate after epoch %d: %g", engine.state.epoch, self.lr_scheduler.get_last_lr()[0])


def stacked_pred_label(output) -> tuple[torch.Tensor, torch.Tensor]:
    """A decollated engine output (list of per-sample dicts) as stacked (pred, label) batches."""
    if isinstance(output, dict):
        return output["pred"], output["label"]
    return torch.stack([o["pred"] for o in output]), torch.stack([torch.as_tensor(o["label"]) for o in output])


def pretext_key_metric(pretext: str, temperature: float = 0.1) -> dict:
    """{name: metric} for the pretext's validation: mean SSIM over both heads and every channel (data
    range 1, MONAI's SSIMMetric), or for SimCLR the NT-Xent loss of the views (lower is better)."""
    check_pretext(pretext)
    if pretext == "simclr":
        from ignite.metrics import Loss

        return {"val_ntxent": Loss(ViewsContrastiveLoss(temperature), output_transform=stacked_pred_label)}
    from monai.handlers import IgniteMetricHandler
    from monai.metrics import SSIMMetric

    return {"val_ssim": IgniteMetricHandler(metric_fn=SSIMMetric(spatial_dims=2, data_range=1.0),
                                            output_transform=heads_and_target)}
